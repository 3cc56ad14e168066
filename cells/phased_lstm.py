"""Phased LSTM: an LSTM whose updates are gated by a learned per-unit oscillation.

Neil, Pfeiffer & Liu, "Phased LSTM: Accelerating Recurrent Network Training for Long or
Event-based Sequences", NIPS 2016 (arXiv:1610.09513). Each unit j has a period ``τ_j``, a
phase shift ``s_j`` and an open ratio ``r_on,j``; at timestamp ``t``::

    φ_t = ((t - s) mod τ) / τ
    k_t = 2 φ_t / r_on          if φ_t < r_on / 2        (opening)
          2 - 2 φ_t / r_on      if r_on / 2 <= φ_t < r_on  (closing)
          α φ_t                 otherwise                (closed, leaking)

    c̃_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t,   h̃_t = o_t ⊙ tanh(c̃_t)     (the LSTM, see cells.lstm)
    c_t = k_t ⊙ c̃_t + (1 - k_t) ⊙ c_{t-1}
    h_t = k_t ⊙ h̃_t + (1 - k_t) ⊙ h_{t-1}

Without timestamps, step ``n`` of a sequence gets timestamp ``n``. The state carries, beside
``h`` and ``c``, the timestamp its next step gets by default (``time``: the last step's + 1, 0
at the start), so a sequence fed in pieces with its state carried (truncated BPTT, streaming) is
numbered as one call over the whole would number it.

The leak ``α`` (``leak``, 1e-3) is used in training only: in eval mode a closed gate holds the
state exactly. ``τ`` starts at ``exp(U(log_period_low, log_period_high))`` (``exp(U(1, 6))``),
``s`` at ``U(0, τ)``, ``r_on`` at ``ratio_on`` (0.05); all three are learned. The paper's LSTM
has peephole connections; they are left out here so that an always-open time gate gives back
exactly the plain LSTM.

Original code: github.com/dannyneil/public_plstm (Theano/Lasagne; the authors' release).
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnzoo.cells.base import Masks
from rnnzoo.cells.checks import require_in_range
from rnnzoo.cells.loops import ops as loop_ops
from rnnzoo.cells.lstm import LSTMCell, lstm_pointwise


class PhasedLSTMState(NamedTuple):
    h: Tensor  # (B, H)
    c: Tensor  # (B, H)
    # The timestamp the next step gets when none is given, one copy a unit (the state's fields
    # share one shape, as ONNX state inputs and the layer's stacking expect): (B, H).
    time: Tensor


class PhasedLSTMCell(LSTMCell):
    """One Phased LSTM step; ``time`` is each sequence's timestamp for this step, ``(B,)``
    (default: the state's ``time``, i.e. the step after the last one)."""

    takes_time = True
    # PhasedLSTMState is LSTMState's (h, c) and the next timestamp; NamedTuples cannot extend one
    # another, so the overrides below name a state LSTMCell's annotations do not admit.
    state_type = PhasedLSTMState  # type: ignore[assignment]
    runs_on_torch_lstm: ClassVar[bool] = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        ratio_on: float = 0.05,
        leak: float = 1e-3,
        log_period_low: float = 1.0,
        log_period_high: float = 6.0,
    ) -> None:
        self.initial_ratio_on = require_in_range("ratio_on", ratio_on, 0.0, 1.0, low_open=True)
        self.leak = require_in_range("leak", leak, 0.0, 1.0)
        self.log_period_low = require_in_range("log_period_low", log_period_low, -math.inf, math.inf)
        self.log_period_high = require_in_range("log_period_high", log_period_high, log_period_low, math.inf)
        super().__init__(input_size, hidden_size)
        self.period = nn.Parameter(torch.empty(hidden_size))  # τ
        self.shift = nn.Parameter(torch.empty(hidden_size))  # s
        self.ratio_on = nn.Parameter(torch.empty(hidden_size))  # r_on
        self.reset_time_gate()

    @torch.no_grad()
    def reset_time_gate(self) -> None:
        """Initialise τ, s and r_on (``reset_parameters`` resets the LSTM weights only)."""
        self.period.uniform_(self.log_period_low, self.log_period_high).exp_()
        self.shift.uniform_(0.0, 1.0).mul_(self.period)
        self.ratio_on.fill_(self.initial_ratio_on)

    def time_gate(self, time: Tensor) -> Tensor:
        """The openness ``k_t``, ``(B, H)``, at timestamps ``time`` ``(B,)``."""
        cycles = (time.unsqueeze(-1) - self.shift) / self.period  # (B, H)
        phase = cycles - torch.floor(cycles)  # φ_t in [0, 1): (t - s) mod τ, over τ
        # r_on is learned and unclamped: a unit whose r_on reaches 0 or below stays closed. Its branches
        # divide by 1 instead, since torch.where backpropagates 0 · ∞ (NaN) from a branch it did not take.
        is_open = self.ratio_on > 0.0
        ratio_on = torch.where(is_open, self.ratio_on, torch.ones_like(self.ratio_on))
        opening = 2.0 * phase / ratio_on
        closing = 2.0 - opening
        leak = self.leak if self.training else 0.0
        closed = leak * phase
        return torch.where(is_open & (phase < 0.5 * ratio_on), opening, torch.where(is_open & (phase < ratio_on), closing, closed))

    @staticmethod
    def next_time(state: PhasedLSTMState) -> Tensor:
        """The timestamp, ``(B,)``, that the step after ``state`` gets when none is given."""
        return state.time[:, 0]

    def recurrent_step(  # type: ignore[override]  # see state_type
        self, projected: Tensor, state: PhasedLSTMState, time: Tensor | None = None, masks: Masks = ()
    ) -> tuple[Tensor, PhasedLSTMState]:
        if time is None:
            raise ValueError("PhasedLSTMCell needs the step's timestamps, shape (batch,)")
        gates = projected + F.linear(state.h, self.weight_hh)  # (B, 4H)
        h_proposed, c_proposed = lstm_pointwise(gates, state.c)
        # The gate in the timestamps' precision (at least float32: RecurrentLayer), applied in the
        # state's; the carried next timestamp in the state's dtype too, as every state field.
        k = self.time_gate(time).to(state.c.dtype)
        c = k * c_proposed + (1.0 - k) * state.c
        h = k * h_proposed + (1.0 - k) * state.h
        return h, PhasedLSTMState(h, c, (time + 1.0).to(state.h.dtype).unsqueeze(-1).expand_as(h))

    has_fused_loop = True

    def fused_loop(  # type: ignore[override]  # see state_type
        self, projected: Tensor, state: PhasedLSTMState, keep: Tensor | None, times: Tensor | None, masks: Masks = ()
    ) -> tuple[Tensor, PhasedLSTMState]:
        if times is None:
            raise ValueError("PhasedLSTMCell needs timestamps, shape (time, batch)")
        # The gate in the timestamps' dtype: the loop's, or float32 for a bfloat16 loop (a phase
        # (t - s) / τ in bfloat16 would be 8 bits of t past 256).
        period, shift, ratio_on = (p.to(times.dtype) for p in (self.period, self.shift, self.ratio_on))
        leak = self.leak if self.training else 0.0  # as time_gate: a closed gate holds the state in eval
        outputs, h, c, *_ = loop_ops.op("phased_lstm_loop")(
            projected, state.h, state.c, self.weight_hh.to(projected.dtype), times, period, shift, ratio_on, keep, leak
        )
        # The next default timestamp: the last valid step's + 1 (a sequence's steps are a prefix).
        if keep is None:
            last = times[-1]  # (B,)
        else:
            index = (keep.sum(0) - 1).clamp(min=0)  # (B,)
            last = torch.where(keep.any(0), times.gather(0, index.unsqueeze(0)).squeeze(0), state.time[:, 0] - 1.0)
        return outputs, PhasedLSTMState(h, c, (last + 1.0).unsqueeze(-1).expand_as(h))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ratio_on={self.initial_ratio_on}, leak={self.leak}"
