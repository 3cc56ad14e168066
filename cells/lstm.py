"""The reference LSTM, in the project's cell contract.

Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000, in ``torch.nn.LSTM``'s
layout (gate order i, f, g, o; two bias vectors) so that weights convert both ways exactly::

    i_t = σ(W_i x_t + U_i h_{t-1} + b_i)
    f_t = σ(W_f x_t + U_f h_{t-1} + b_f)
    g_t = tanh(W_g x_t + U_g h_{t-1} + b_g)
    o_t = σ(W_o x_t + U_o h_{t-1} + b_o)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

The layer runs stacks of these cells on ``torch.nn.LSTM``'s kernel (cuDNN on GPU) whenever its
options allow; this step stays the reference for tests and export.

Reference implementation: ``torch.nn.LSTM`` (the same equations and layout; tests hold the two equal).
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnzoo.cells.base import Masks, RecurrentCell
from rnnzoo.cells.loops import ops as loop_ops


class LSTMState(NamedTuple):
    h: Tensor  # (B, H)
    c: Tensor  # (B, H)


def lstm_pointwise(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The LSTM's elementwise part: gate pre-activations ``(B, 4H)`` and ``c_{t-1}`` -> h_t, c_t."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next = torch.sigmoid(o) * torch.tanh(c_next)
    return h_next, c_next


class LSTMCell(RecurrentCell):
    """One LSTM step with ``torch.nn.LSTM``'s parameters: weight_ih, weight_hh, bias_ih, bias_hh."""

    state_type = LSTMState
    gate_order: ClassVar[str] = "ifgo"
    # The layer may hand a stack of these to torch.nn.LSTM's fused kernel.
    runs_on_torch_lstm: ClassVar[bool] = True

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch.nn.LSTM's default: everything U(-1/sqrt(H), 1/sqrt(H)).
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            nn.init.uniform_(weight, -bound, bound)

    def project_input(self, x: Tensor, masks: Masks = ()) -> Tensor:
        # (B, T, I) -> (B, T, 4H); both biases folded in here, once for all steps.
        return F.linear(x, self.weight_ih, self.bias_ih + self.bias_hh)

    def recurrent_step(self, projected: Tensor, state: LSTMState, time: Tensor | None = None, masks: Masks = ()) -> tuple[Tensor, LSTMState]:
        gates = projected + F.linear(state.h, self.weight_hh)  # (B, 4H)
        h, c = lstm_pointwise(gates, state.c)
        return h, LSTMState(h, c)

    # Under torch.compile, which cannot trace torch.nn.LSTM's kernel, the layer runs this loop.
    has_fused_loop = True

    def fused_loop(
        self, projected: Tensor, state: LSTMState, keep: Tensor | None, times: Tensor | None, masks: Masks = ()
    ) -> tuple[Tensor, LSTMState]:
        outputs, h, c, *_ = loop_ops.op("lstm_loop")(projected, state.h, state.c, self.weight_hh.to(projected.dtype), keep)
        return outputs, LSTMState(h, c)
