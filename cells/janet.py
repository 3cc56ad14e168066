"""JANET: "Just Another NETwork", the forget-gate-only LSTM.

van der Westhuizen & Lasenby, "The unreasonable effectiveness of the forget gate", 2018
(arXiv:1804.04849). Only the forget gate and the candidate survive::

    s_t = U_f h_{t-1} + W_f x_t + b_f
    ĉ_t = U_c h_{t-1} + W_c x_t + b_c
    c_t = σ(s_t) ⊙ c_{t-1} + (1 - σ(s_t - β)) ⊙ tanh(ĉ_t)
    h_t = c_t

The shift ``β`` (``shift``, default 1 as in the paper) lets slightly more information through
than is forgotten; ``shift=0`` gives the coupled form ``σ(s)⊙c + (1-σ(s))⊙tanh(ĉ)``. The
forget bias starts at the chrono initialisation ``b_f ~ log(U(1, T_max - 1))`` (the paper's
choice); ``max_timescale`` is that ``T_max``.

Original code: github.com/JosvanderWesthuizen/janet (Keras, TensorFlow 1).
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnzoo.cells.base import Masks, RecurrentCell
from rnnzoo.cells.checks import require_in_range
from rnnzoo.cells.chrono import chrono_initialize_
from rnnzoo.cells.loops import ops as loop_ops


class JANETState(NamedTuple):
    c: Tensor  # (B, H); the output h_t is c_t itself


class JANETCell(RecurrentCell):
    """One JANET step; gates in the order (forget, candidate)."""

    state_type = JANETState
    gate_order: ClassVar[str] = "fc"

    def __init__(self, input_size: int, hidden_size: int, shift: float = 1.0, max_timescale: float = 100.0) -> None:
        super().__init__(input_size, hidden_size)
        self.shift = require_in_range("shift", shift, -math.inf, math.inf)
        self.max_timescale = max_timescale
        self.weight_ih = nn.Parameter(torch.empty(2 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(2 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(2 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The paper's Keras defaults: Glorot-uniform input weights, orthogonal recurrent weights.
        for weight_ih in self.weight_ih.chunk(2):
            nn.init.xavier_uniform_(weight_ih)
        for weight_hh in self.weight_hh.chunk(2):
            nn.init.orthogonal_(weight_hh)
        nn.init.zeros_(self.bias)
        chrono_initialize_(self, self.max_timescale)

    def project_input(self, x: Tensor, masks: Masks = ()) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)  # (B, T, 2H)

    def recurrent_step(self, projected: Tensor, state: JANETState, time: Tensor | None = None, masks: Masks = ()) -> tuple[Tensor, JANETState]:
        s, candidate = (projected + F.linear(state.c, self.weight_hh)).chunk(2, dim=-1)  # (B, H) each
        c = torch.sigmoid(s) * state.c + (1.0 - torch.sigmoid(s - self.shift)) * torch.tanh(candidate)
        return c, JANETState(c)

    has_fused_loop = True

    def fused_loop(
        self, projected: Tensor, state: JANETState, keep: Tensor | None, times: Tensor | None, masks: Masks = ()
    ) -> tuple[Tensor, JANETState]:
        weight_hh = self.weight_hh.to(projected.dtype)
        outputs, c, _, _ = loop_ops.op("janet_loop")(projected, state.c, weight_hh, keep, self.shift)
        return outputs, JANETState(c)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, shift={self.shift}, max_timescale={self.max_timescale}"
