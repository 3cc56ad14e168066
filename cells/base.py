"""The contract every recurrent cell follows.

A cell computes one time step, ``cell(x_t, state) -> (h_t, new_state)``, where ``state`` is
a NamedTuple of ``(B, H)`` tensors (it maps one-to-one onto ONNX inputs and outputs).

The step is split in two so that a layer can run it fast:

* ``project_input(x)`` applies the input weights to every step at once, ``(B, T, I) ->
  (B, T, G)``: one large matmul before the time loop, as cuDNN does.
* ``recurrent_step(projected_t, state, time_t, masks)`` does only the recurrent part of one
  step. It is a pure function of its tensors: no Python-side state, no in-place update of
  the state, so the same step can run under ``torch``'s ``scan`` operator.

``forward`` glues the two together for a single step, and is the plain reference the layer's
fast paths are tested against.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnzoo.cells.checks import require_positive_int

# A cell's state: a NamedTuple whose fields are all (B, H) tensors. Typed Any, not NamedTuple: each
# cell's methods name its own NamedTuple class (LSTMState, ...), and NamedTuples share no base
# class that would let those narrower annotations override the base's.
State = Any
# Per-sequence random masks (variational dropout); empty when a cell draws none.
Masks = tuple[Tensor, ...]


def constructor_options(model_type: type[nn.Module]) -> tuple[str, ...]:
    """The keyword options of ``model_type``'s constructor besides input_size and hidden_size."""
    parameters = inspect.signature(model_type.__init__).parameters
    return tuple(name for name in parameters if name not in ("self", "input_size", "hidden_size"))


class RecurrentCell(nn.Module):
    """Base class of every cell: shape checks, state construction and the one-step glue."""

    # The cell's State NamedTuple class. type[Any], not type[State]: mypy reads ``_fields`` from
    # type[NamedTuple] but refuses to call it with the fields.
    state_type: ClassVar[type[Any]]
    # True for cells whose step reads a timestamp (the Phased LSTM's time gate).
    takes_time: ClassVar[bool] = False

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = require_positive_int("input_size", input_size)
        self.hidden_size = require_positive_int("hidden_size", hidden_size)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The keyword options the constructor takes besides input_size and hidden_size."""
        return constructor_options(cls)

    @classmethod
    def for_layer(cls, input_size: int, hidden_size: int, layer_index: int, num_layers: int, **options: Any) -> RecurrentCell:
        """Build the cell of one layer of a stack; cells whose init depends on depth override it."""
        return cls(input_size, hidden_size, **options)

    def init_state(self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> State:
        """The zero state for ``batch`` sequences."""
        zeros = [torch.zeros(batch, self.hidden_size, device=device, dtype=dtype) for _ in self.state_type._fields]
        return self.state_type(*zeros)

    @staticmethod
    def next_time(state: State) -> Tensor:
        """Cells that take timestamps: the one, ``(B,)``, the step after ``state`` gets by default."""
        raise NotImplementedError("only cells that take timestamps number their steps")

    def draw_masks(self, batch: int, device: torch.device, dtype: torch.dtype) -> Masks:
        """Random masks drawn once per sequence and passed to every step (none by default)."""
        return ()

    def constrain_parameters_(self) -> None:
        """Project parameters back onto their allowed set; runs before every training forward."""

    def project_input(self, x: Tensor, masks: Masks = ()) -> Tensor:
        """Input part of every step at once: ``(B, T, I) -> (B, T, G)``."""
        raise NotImplementedError

    def recurrent_step(self, projected: Tensor, state: State, time: Tensor | None = None, masks: Masks = ()) -> tuple[Tensor, State]:
        """Recurrent part of one step: ``(B, G)``, state -> ``(B, H)`` output, new state."""
        raise NotImplementedError

    def fused_loop(
        self, projected: Tensor, state: State, keep: Tensor | None, times: Tensor | None, masks: Masks = ()
    ) -> tuple[Tensor, State]:
        """The whole time loop in one op (``cells.loops``), time-major: the reference loop's result.

        ``projected`` ``(T, B, G)`` contiguous, float32 or float64; state fields ``(B, H)`` in that
        dtype; ``keep`` ``(T, B)`` bool or None; ``times`` ``(T, B)`` for cells that take time.
        Returns outputs ``(T, B, H)`` and the final state. Only cells with ``has_fused_loop``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no fused loop")

    # True for cells that implement fused_loop.
    has_fused_loop: ClassVar[bool] = False

    def forward(self, x: Tensor, state: State | None = None, time: Tensor | None = None) -> tuple[Tensor, State]:
        """One step: ``x`` is ``(B, I)``, ``time`` (Phased LSTM only) is ``(B,)``, by default ``next_time(state)``."""
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"a step's input must have shape (batch, {self.input_size}), got {tuple(x.shape)}")
        batch = x.shape[0]
        if state is None:
            state = self.init_state(batch, device=x.device, dtype=x.dtype)
        if self.takes_time:
            if time is None:  # the step after the state's (its state carries the next timestamp)
                time = self.next_time(state)
            if tuple(time.shape) != (batch,):
                raise ValueError(f"time must have shape ({batch},), got {tuple(time.shape)}")
        if self.training:
            self.constrain_parameters_()
        masks = self.draw_masks(batch, x.device, x.dtype)
        projected = self.project_input(x.unsqueeze(1), masks).squeeze(1)
        return self.recurrent_step(projected, state, time, masks)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"
