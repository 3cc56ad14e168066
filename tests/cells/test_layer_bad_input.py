"""RecurrentLayer refuses bad input with a message that names it: widths, ranks, empty batches, lengths, times.

Each case runs on every sequence cell it applies to, so that no cell slips past the layer's validation.
Beside the times checks sits the one thing a Phased LSTM cell does without times: it numbers its
steps from its state.
"""

from __future__ import annotations

import pytest
import torch

from tests.cells.layer_reference import SEQUENCE_CELLS, B, H, I, T, inputs, make, random_times

# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_wrong_input_width_raises(name):
    layer = make(name)
    with pytest.raises(ValueError, match=r"input has 5 features.*input_size=3"):
        layer(inputs(features=5))


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
@pytest.mark.parametrize("shape", [(B, I), (B, T, I, 1), ()], ids=["2d", "4d", "scalar"])
def test_wrong_input_rank_raises(name, shape):
    layer = make(name)
    with pytest.raises(ValueError, match="input must be 3-D"):
        layer(torch.zeros(shape, dtype=torch.float64))


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
@pytest.mark.parametrize("shape", [(B, 0, I), (0, T, I)], ids=["no-steps", "no-sequences"])
def test_empty_input_raises(name, shape):
    layer = make(name)
    with pytest.raises(ValueError, match="at least one sequence and one step"):
        layer(torch.zeros(shape, dtype=torch.float64))


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
@pytest.mark.parametrize(
    "lengths, message",
    [
        ([0, 2, 3], r"lengths must be in \[1, 6\]"),
        ([7, 2, 3], r"lengths must be in \[1, 6\]"),
        ([-1, 2, 3], r"lengths must be in \[1, 6\]"),
        ([2, 3], r"lengths must be an integer tensor of shape \(3,\)"),
        ([[2], [3], [4]], r"lengths must be an integer tensor of shape \(3,\)"),
        ([2.0, 3.0, 4.0], r"lengths must be an integer tensor"),
        ([True, True, True], r"lengths must be an integer tensor"),
    ],
    ids=["zero", "too-long", "negative", "too-few", "2d", "float", "bool"],
)
def test_bad_lengths_raise(name, lengths, message):
    layer = make(name)
    with pytest.raises(ValueError, match=message):
        layer(inputs(), lengths=torch.tensor(lengths))


@pytest.mark.parametrize("name", [n for n in SEQUENCE_CELLS if n != "phased_lstm"])
def test_times_given_to_cell_without_time_raise(name):
    layer = make(name)
    with pytest.raises(ValueError, match="takes no timestamps"):
        layer(inputs(), times=random_times())


@pytest.mark.parametrize("shape", [(B,), (B, T + 1), (T, B), (B, T, 1)], ids=["1d", "too-long", "transposed", "3d"])
def test_times_of_wrong_shape_raise(shape):
    layer = make("phased_lstm")
    with pytest.raises(ValueError, match=r"times must have shape \(3, 6\)"):
        layer(inputs(), times=torch.zeros(shape, dtype=torch.float64))


def test_phased_lstm_cell_step_numbers_itself_from_its_state():
    cell = make("phased_lstm").cells[0]
    x = torch.zeros(B, I, dtype=torch.float64)
    _, state = cell(x)
    _, state = cell(x, state)
    assert torch.equal(state.time, torch.full((B, H), 2.0, dtype=torch.float64))
