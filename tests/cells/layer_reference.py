"""The shared header of the RecurrentLayer tests (tests/cells/test_layer_*.py): test sizes, the cells
under test, and a reference that steps a layer's own cells by hand.

Every check compares the layer with its own cells stepped by hand (``cell(x_t, state)``), the
plainest reading of what the layer must compute. Shapes are tiny and most comparisons run in
float64 so that tolerances can stay tight.
"""

from __future__ import annotations

import torch
from torch.testing import assert_close

from rnnzoo import cells
from rnnzoo.cells.layer import RecurrentLayer

SEQUENCE_CELLS = ("lstm", "janet", "chrono_lstm", "indrnn", "phased_lstm", "rhn")
FUSED_CELLS = ("lstm", "chrono_lstm")
# Options a cell needs (chrono_lstm) or that make the test see its behaviour: with its default
# open ratio of 0.05 a Phased LSTM's gate stays shut over a few integer timestamps and the
# outputs are all zero, which would make every comparison vacuous.
CELL_OPTIONS = {"chrono_lstm": {"max_timescale": 10}, "phased_lstm": {"ratio_on": 0.6}}
B, T, I, H = 3, 6, 3, 4
LENGTHS = [6, 2, 4]  # unsorted, one full-length sequence, one short one


def make(name: str, dtype: torch.dtype = torch.float64, **options) -> RecurrentLayer:
    """The layer of ``name`` at the test sizes, in eval mode, in ``dtype``."""
    input_size = options.pop("input_size", I)
    hidden_size = options.pop("hidden_size", H)
    layer = cells.make(name, input_size=input_size, hidden_size=hidden_size, **{**CELL_OPTIONS.get(name, {}), **options})
    return layer.to(dtype).eval()


def inputs(batch: int = B, steps: int = T, features: int = I, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(batch, steps, features, dtype=dtype)


def random_times(batch: int = B, steps: int = T, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Increasing, irregular timestamps ``(B, T)``."""
    return torch.cumsum(torch.rand(batch, steps, dtype=dtype) * 3.0 + 0.1, dim=1)


def default_times(layer: RecurrentLayer, batch: int, steps: int, dtype: torch.dtype, state=None) -> torch.Tensor | None:
    """What the layer uses when no times are given: the step indices after the state's next
    timestamp (from 0 without a state; None for cells without time)."""
    if not layer.takes_time:
        return None
    start = torch.zeros(batch, 1, dtype=dtype) if state is None else state.time[0, :, :1]
    return start + torch.arange(steps, dtype=dtype)


def random_state(layer: RecurrentLayer, batch: int = B, dtype: torch.dtype = torch.float64):
    shape = (layer.num_layers * layer.num_directions, batch, layer.hidden_size)
    fields = {name: torch.randn(shape, dtype=dtype) * 0.5 for name in layer.state_type._fields}
    if "time" in fields:  # the next timestamp: one per sequence, as a step leaves it
        fields["time"] = torch.randint(0, 20, shape[:2] + (1,)).to(dtype).expand(shape)
    return layer.state_type(**fields)


def run_cell(cell, x: torch.Tensor, state=None, times: torch.Tensor | None = None):
    """Step ``cell`` by hand over ``x`` ``(B, T, I)``; returns outputs ``(B, T, H)`` and the last state."""
    outputs = []
    for t in range(x.shape[1]):
        if cell.takes_time:
            h, state = cell(x[:, t], state, times[:, t])
        else:
            h, state = cell(x[:, t], state)
        outputs.append(h)
    return torch.stack(outputs, dim=1), state


def cell_state(layer: RecurrentLayer, state, index: int, rows: slice = slice(None)):
    """Cell ``index``'s slice of a stacked layer state (None stays None)."""
    if state is None:
        return None
    return layer.state_type(*(field[index, rows] for field in state))


def reference(layer: RecurrentLayer, x: torch.Tensor, state=None, lengths=None, times=None):
    """The layer computed by hand, one sequence at a time at its own length (batch-first, no dropout).

    Returns outputs ``(B, T, D*H)`` (zero past each end) and the stacked final state.
    """
    batch, steps = x.shape[:2]
    lengths = [steps] * batch if lengths is None else [int(n) for n in lengths]
    if times is None:
        times = default_times(layer, batch, steps, x.dtype, state)
    outputs = torch.zeros(batch, steps, layer.output_size, dtype=x.dtype)
    finals = [[None] * batch for _ in range(layer.num_layers * layer.num_directions)]
    for b, n in enumerate(lengths):
        layer_input = x[b : b + 1, :n]
        seq_times = None if times is None else times[b : b + 1, :n]
        for depth in range(layer.num_layers):
            halves = []
            for direction in range(layer.num_directions):
                index = depth * layer.num_directions + direction
                start = cell_state(layer, state, index, slice(b, b + 1))
                if direction == 0:
                    out, final = run_cell(layer.cells[index], layer_input, start, seq_times)
                else:
                    reversed_times = None if seq_times is None else seq_times.flip(1)
                    out, final = run_cell(layer.cells[index], layer_input.flip(1), start, reversed_times)
                    out = out.flip(1)
                halves.append(out)
                finals[index][b] = final
            layer_input = torch.cat(halves, dim=-1)
        outputs[b, :n] = layer_input[0]
    stacked = layer.state_type(
        *(torch.stack([torch.cat([finals[i][b][f] for b in range(batch)]) for i in range(len(finals))]) for f in range(len(layer.state_type._fields)))
    )
    return outputs, stacked


def assert_state_close(actual, expected, **tolerance) -> None:
    assert type(actual) is type(expected), f"state type {type(actual).__name__}, expected {type(expected).__name__}"
    for name, a, e in zip(expected._fields, actual, expected):
        assert_close(a, e, msg=lambda m, name=name: f"state field {name!r}: {m}", **tolerance)


def assert_nontrivial(outputs: torch.Tensor) -> None:
    """Guard against vacuous comparisons: the outputs must actually vary."""
    assert outputs.abs().max() > 1e-3 and outputs.std() > 1e-4, "outputs are (nearly) all zero: the test would prove nothing"


def pad_with_garbage(x: torch.Tensor, lengths, scale: float = 1e4) -> torch.Tensor:
    x = x.clone()
    for b, n in enumerate(lengths):
        x[b, n:] = torch.randn_like(x[b, n:]) * scale
    return x


def times_with_garbage(times: torch.Tensor, lengths) -> torch.Tensor:
    times = times.clone()
    for b, n in enumerate(lengths):
        times[b, n:] = torch.randn_like(times[b, n:]) * 1e4
    return times


def loss_weights(outputs, state, seed=1):
    """Fixed random weights for a loss over outputs and final state: the same for every run compared."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(outputs.shape, generator=generator, dtype=outputs.dtype), [
        torch.randn(field.shape, generator=generator, dtype=field.dtype) for field in state
    ]
