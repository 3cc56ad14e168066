"""IndRNN: the independently recurrent neural network.

Li, Li, Cook, Zhu & Gao, "Independently Recurrent Neural Network (IndRNN): Building a Longer
and Deeper RNN", CVPR 2018 (arXiv:1803.04831)::

    h_t = act(W x_t + u ⊙ h_{t-1} + b)

Each unit has one scalar recurrent weight ``u_j``, so its gradient through time is
``u_j^T``-bounded: with ReLU, ``|u_j| <= 2**(1/T)`` keeps it from exploding over ``T`` steps.
tanh's derivative (below 1) shrinks that gradient further, so its bound is looser. The bound
(``recurrent_max_abs``) defaults, when ``sequence_length`` T is given, to the authors' value
for the activation (``U_bound``, ``MAG = 2``, in ``adding/adding.py`` of
github.com/Sunnydreamrain/IndRNN_Theano_Lasagne; the tanh factor ``0.9**(T/10)`` is the code's)::

    relu:  2**(1/T)                     tanh:  (2 / 0.9**(T/10))**(1/T)

and to no bound without ``sequence_length``; an explicit ``recurrent_max_abs`` overrides it.
It is enforced on the parameter throughout training, not only at init.
``u`` starts at ``U(0, recurrent_max_abs)`` (``U(0, 1)`` with no bound); the paper's init for
the last layer, ``U((1/2)**(1/T), recurrent_max_abs)``, keeps that layer's memory long and is
chosen with ``last_layer_init=True`` (a stacked layer applies it to its last layer).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnzoo.cells.base import Masks, RecurrentCell
from rnnzoo.cells.checks import require_bool, require_choice, require_in_range, require_positive_int
from rnnzoo.cells.loops import ops as loop_ops

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


def default_recurrent_max_abs(activation: str, sequence_length: int) -> float:
    """The authors' bound on ``|u|`` for ``sequence_length`` steps (``MAG = 2``), per activation."""
    if activation == "tanh":
        return (2.0 / 0.9 ** (sequence_length / 10.0)) ** (1.0 / sequence_length)
    return 2.0 ** (1.0 / sequence_length)


class IndRNNState(NamedTuple):
    h: Tensor  # (B, H)


class IndRNNCell(RecurrentCell):
    """One IndRNN step; ``recurrent_weight`` is the paper's ``u`` (one scalar a unit)."""

    state_type = IndRNNState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        activation: str = "relu",
        sequence_length: int | None = None,
        recurrent_max_abs: float | None = None,
        last_layer_init: bool = False,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = require_choice("activation", activation, tuple(ACTIVATIONS))
        if sequence_length is not None:
            require_positive_int("sequence_length", sequence_length)
        if recurrent_max_abs is None and sequence_length is not None:
            recurrent_max_abs = default_recurrent_max_abs(self.activation, sequence_length)
        if recurrent_max_abs is not None:
            require_in_range("recurrent_max_abs", recurrent_max_abs, 0.0, math.inf, low_open=True)
        if last_layer_init and sequence_length is None:
            raise ValueError("last_layer_init=True needs sequence_length (T) for its lower bound (1/2)**(1/T)")
        self.sequence_length = sequence_length
        self.recurrent_max_abs = recurrent_max_abs
        self.last_layer_init = require_bool("last_layer_init", last_layer_init)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.recurrent_weight = nn.Parameter(torch.empty(hidden_size))
        self.bias = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    @classmethod
    def for_layer(cls, input_size: int, hidden_size: int, layer_index: int, num_layers: int, **options: Any) -> IndRNNCell:
        # The paper's long-memory init is for the last layer only.
        last_layer_init = options.pop("last_layer_init", False) and layer_index == num_layers - 1
        return cls(input_size, hidden_size, last_layer_init=last_layer_init, **options)

    def reset_parameters(self) -> None:
        upper = 1.0 if self.recurrent_max_abs is None else self.recurrent_max_abs
        lower = 0.0
        if self.last_layer_init:
            assert self.sequence_length is not None  # __init__ refuses last_layer_init without it
            lower = 0.5 ** (1.0 / self.sequence_length)
        nn.init.uniform_(self.recurrent_weight, lower, max(lower, upper))
        nn.init.kaiming_uniform_(self.weight_ih, a=math.sqrt(5))  # torch.nn.Linear's default
        nn.init.zeros_(self.bias)

    @torch.no_grad()
    def constrain_parameters_(self) -> None:
        """Project ``u`` back into ``[-recurrent_max_abs, recurrent_max_abs]``.

        Runs before every training forward, so a bound an optimizer step crossed is restored
        before the weight is used again. The in-place write happens only when the bound is
        crossed, so graphs kept for gradient accumulation are not invalidated needlessly.
        """
        bound = self.recurrent_max_abs
        if bound is None:
            return
        # Compiling, a data-dependent branch would break the graph: clamp always (`or` short-circuits).
        if torch.compiler.is_compiling() or bool(self.recurrent_weight.abs().max() > bound):
            self.recurrent_weight.clamp_(-bound, bound)

    def project_input(self, x: Tensor, masks: Masks = ()) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)  # (B, T, H)

    def recurrent_step(self, projected: Tensor, state: IndRNNState, time: Tensor | None = None, masks: Masks = ()) -> tuple[Tensor, IndRNNState]:
        h = ACTIVATIONS[self.activation](projected + self.recurrent_weight * state.h)
        return h, IndRNNState(h)

    has_fused_loop = True

    def fused_loop(
        self, projected: Tensor, state: IndRNNState, keep: Tensor | None, times: Tensor | None, masks: Masks = ()
    ) -> tuple[Tensor, IndRNNState]:
        recurrent_weight = self.recurrent_weight.to(projected.dtype)
        outputs, h, _ = loop_ops.op("indrnn_loop")(projected, state.h, recurrent_weight, keep, self.activation == "relu")
        return outputs, IndRNNState(h)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation!r}, recurrent_max_abs={self.recurrent_max_abs}"
