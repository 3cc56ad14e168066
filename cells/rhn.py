"""Recurrent Highway Network: a deep transition of highway layers inside every time step.

Zilly, Srivastava, Koutník & Schmidhuber, "Recurrent Highway Networks", ICML 2017
(arXiv:1607.03474). With recurrence depth L (``depth``) and ``s_0^{[t]} = s_L^{[t-1]}``, for
micro-layers ``l = 1..L``::

    h_l = tanh(W_H x_t 𝟙{l=1} + R_{H,l} s_{l-1} + b_{H,l})
    t_l = σ(W_T x_t 𝟙{l=1} + R_{T,l} s_{l-1} + b_{T,l})
    s_l = h_l ⊙ t_l + s_{l-1} ⊙ (1 - t_l)          (coupled carry gate c = 1 - t)

and the output is ``y_t = s_L``. The input enters the first micro-layer only. Transform-gate
biases start at ``transform_bias`` (-2, so the cell begins by carrying its state). Dropout is
variational: one mask per sequence for the input (``input_dropout``) and one for the state
(``state_dropout``), shared by every time step and every micro-layer.

Original code: github.com/jzilly/RecurrentHighwayNetworks (TensorFlow 1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnzoo.cells.base import Masks, RecurrentCell
from rnnzoo.cells.checks import require_in_range, require_positive_int, require_rate
from rnnzoo.cells.loops import ops as loop_ops


class RHNState(NamedTuple):
    s: Tensor  # (B, H)


def _dropout_mask(batch: int, size: int, rate: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    keep = 1.0 - rate
    return torch.bernoulli(torch.full((batch, size), keep, device=device, dtype=dtype)) / keep


class RHNCell(RecurrentCell):
    """One RHN time step of ``depth`` highway micro-layers; gates in the order (H, T)."""

    state_type = RHNState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        depth: int = 3,
        transform_bias: float = -2.0,
        input_dropout: float = 0.0,
        state_dropout: float = 0.0,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.depth = require_positive_int("depth", depth)
        self.transform_bias = require_in_range("transform_bias", transform_bias, -math.inf, math.inf)
        self.input_dropout = require_rate("input_dropout", input_dropout)
        self.state_dropout = require_rate("state_dropout", state_dropout)
        self.weight_ih = nn.Parameter(torch.empty(2 * hidden_size, input_size))  # [W_H; W_T]
        self.weight_hh = nn.Parameter(torch.empty(depth, 2 * hidden_size, hidden_size))  # [R_H,l; R_T,l]
        self.bias = nn.Parameter(torch.empty(depth, 2 * hidden_size))  # [b_H,l; b_T,l]
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        nn.init.uniform_(self.weight_ih, -bound, bound)
        nn.init.uniform_(self.weight_hh, -bound, bound)
        self.bias[:, : self.hidden_size] = 0.0
        self.bias[:, self.hidden_size :] = self.transform_bias

    def draw_masks(self, batch: int, device: torch.device, dtype: torch.dtype) -> Masks:
        if not self.training or (self.input_dropout == 0.0 and self.state_dropout == 0.0):
            return ()
        input_mask = _dropout_mask(batch, self.input_size, self.input_dropout, device, dtype)  # (B, I)
        state_mask = _dropout_mask(batch, self.hidden_size, self.state_dropout, device, dtype)  # (B, H)
        return input_mask, state_mask

    def project_input(self, x: Tensor, masks: Masks = ()) -> Tensor:
        if masks:
            x = x * masks[0].unsqueeze(1)  # the same input mask at every step
        return F.linear(x, self.weight_ih)  # (B, T, 2H)

    def recurrent_step(self, projected: Tensor, state: RHNState, time: Tensor | None = None, masks: Masks = ()) -> tuple[Tensor, RHNState]:
        s = state.s
        # unbind, not weight_hh[layer]: an indexed slice's backward writes a zero tensor the size
        # of all depth layers, once per micro-layer and step.
        for layer, (weight_hh, bias) in enumerate(zip(self.weight_hh.unbind(0), self.bias.unbind(0))):
            s_in = s * masks[1] if masks else s
            pre = F.linear(s_in, weight_hh, bias)  # (B, 2H)
            if layer == 0:
                pre = pre + projected
            h, t = pre.chunk(2, dim=-1)
            transform = torch.sigmoid(t)
            s = torch.tanh(h) * transform + s * (1.0 - transform)
        return s, RHNState(s)

    has_fused_loop = True

    def fused_loop(
        self, projected: Tensor, state: RHNState, keep: Tensor | None, times: Tensor | None, masks: Masks = ()
    ) -> tuple[Tensor, RHNState]:
        dtype = projected.dtype
        state_mask = masks[1].to(dtype).contiguous() if masks else None
        weight_hh, bias = self.weight_hh.to(dtype), self.bias.to(dtype)
        outputs, s, _, _ = loop_ops.op("rhn_loop")(projected, state.s, weight_hh, bias, state_mask, keep)
        return outputs, RHNState(s)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, depth={self.depth}, input_dropout={self.input_dropout}, state_dropout={self.state_dropout}"
