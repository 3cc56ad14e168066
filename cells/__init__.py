"""rnnzoo's cells: the recurrent cells papers proposed as better LSTMs, behind one layer API.

    from rnnzoo import cells
    cells.names()                       # ['chrono_lstm', 'indrnn', 'janet', 'lstm', ...]
    layer = cells.make("janet", input_size=1, hidden_size=128, num_layers=2)
    outputs, state = layer(x)           # x: (B, T, I) -> outputs (B, T, H)

Pure PyTorch: nothing here imports MLflow, DVC or the CLI.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from rnnzoo.cells.base import RecurrentCell, constructor_options
from rnnzoo.cells.checks import refuse_unknown
from rnnzoo.cells.chrono import chrono_forget_bias, chrono_initialize_
from rnnzoo.cells.chrono_lstm import ChronoLSTMCell
from rnnzoo.cells.convert import from_torch_lstm, to_torch_lstm
from rnnzoo.cells.indrnn import IndRNNCell
from rnnzoo.cells.janet import JANETCell
from rnnzoo.cells.layer import RecurrentLayer
from rnnzoo.cells.lstm import LSTMCell
from rnnzoo.cells.phased_lstm import PhasedLSTMCell
from rnnzoo.cells.rhn import RHNCell
from rnnzoo.cells.unfolded_lstm import UnfoldedLSTM

# Sequence cells run through RecurrentLayer; unfolded_lstm is a network of its own (no time axis).
SEQUENCE_CELLS: dict[str, type[RecurrentCell]] = {
    "lstm": LSTMCell,
    "janet": JANETCell,
    "chrono_lstm": ChronoLSTMCell,
    "indrnn": IndRNNCell,
    "phased_lstm": PhasedLSTMCell,
    "rhn": RHNCell,
}
VECTOR_MODELS: dict[str, type[nn.Module]] = {"unfolded_lstm": UnfoldedLSTM}
LAYER_OPTIONS = ("num_layers", "dropout", "bidirectional", "batch_first", "fused", "time_loop")


def names() -> list[str]:
    """Every registered cell name."""
    return sorted([*SEQUENCE_CELLS, *VECTOR_MODELS])


def is_sequence_model(name: str) -> bool:
    """True for cells that run over a time axis; False for ``unfolded_lstm``, which maps vectors."""
    _check_name(name)
    return name in SEQUENCE_CELLS


def options(name: str) -> tuple[str, ...]:
    """The keyword options ``make(name, ...)`` accepts."""
    _check_name(name)
    if name in VECTOR_MODELS:
        return constructor_options(VECTOR_MODELS[name])
    return (*LAYER_OPTIONS, *SEQUENCE_CELLS[name].option_names())


def make(name: str, input_size: int, hidden_size: int, **kwargs: Any) -> nn.Module:
    """Build the layer of cell ``name`` (for ``unfolded_lstm``: the whole unfolded network).

    Args:
        name: one of ``names()``: ``lstm`` (Hochreiter & Schmidhuber 1997), ``janet`` (van der
            Westhuizen & Lasenby 2018), ``chrono_lstm`` (Tallec & Ollivier 2018), ``indrnn`` (Li et
            al. 2018), ``phased_lstm`` (Neil et al. 2016), ``rhn`` (Zilly et al. 2017),
            ``unfolded_lstm`` (the unfolded-LSTM study). Each cell's module gives its equations.
        input_size: features per step, ``I``.
        hidden_size: units per layer and direction, ``H``.
        **kwargs: the layer's options (``num_layers``, ``dropout`` between layers,
            ``bidirectional``, ``batch_first`` (default True), ``fused`` (default True: the fused
            C++/Triton time loop where available), ``time_loop`` ("python" or "scan", for ONNX
            export)) and the cell's own (``options(name)`` lists them; ``chrono_lstm`` requires
            ``max_timescale``).

    Returns:
        For a sequence cell, a ``RecurrentLayer`` mapping ``x`` float ``(B, T, I)`` (``(T, B,
        I)`` with ``batch_first=False``) and an optional state to ``outputs`` ``(B, T, H·D)`` and
        the final state (each field ``(L·D, B, H)``; ``D`` = 2 if bidirectional); it also takes
        ``lengths`` ``(B,)`` and, for ``phased_lstm``, ``times`` ``(B, T)``. For
        ``unfolded_lstm``, a module mapping ``(B, I)`` to ``(B, H)`` and its last (h, c). Parameters are float32
        (move them with ``.to(dtype)``; float64, float16 and bfloat16 work).

    Raises:
        ValueError: an unknown cell or option, or an option out of range, naming the value and
            what is allowed.
    """
    refuse_unknown(sorted(kwargs), options(name), whose=f"for cell {name!r}")
    if name in VECTOR_MODELS:
        return VECTOR_MODELS[name](input_size, hidden_size, **kwargs)
    try:
        return RecurrentLayer(SEQUENCE_CELLS[name], input_size, hidden_size, **kwargs)
    except TypeError as error:  # a required option left out, e.g. chrono_lstm's max_timescale
        raise ValueError(f"cell {name!r}: {error}") from None


def _check_name(name: str) -> None:
    refuse_unknown([name], names(), what="cell")


__all__ = [
    "ChronoLSTMCell",
    "IndRNNCell",
    "JANETCell",
    "LSTMCell",
    "PhasedLSTMCell",
    "RHNCell",
    "RecurrentCell",
    "RecurrentLayer",
    "UnfoldedLSTM",
    "chrono_forget_bias",
    "chrono_initialize_",
    "from_torch_lstm",
    "is_sequence_model",
    "make",
    "names",
    "options",
    "to_torch_lstm",
]
