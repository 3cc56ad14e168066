"""RecurrentLayer's state: an initial state, a sequence continued across calls, and determinism.

An initial state must act as the cells stepped by hand from it (tests/cells/layer_reference.py), a
wrong one must be refused, a sequence fed in pieces with its state must equal one call on every
time loop, and the same seed must give the same weights and outputs.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tests.cells.layer_reference import (
    LENGTHS,
    SEQUENCE_CELLS,
    B,
    H,
    T,
    assert_state_close,
    cell_state,
    default_times,
    inputs,
    make,
    random_state,
    reference,
    run_cell,
)

# --- initial state ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_initial_state_is_used(name):
    layer = make(name, num_layers=2, bidirectional=True)
    x = inputs()
    state = random_state(layer)
    outputs, final = layer(x, state)
    zero_outputs, _ = layer(x)
    assert not torch.allclose(outputs, zero_outputs), "the initial state changed nothing"
    expected_outputs, expected_final = reference(layer, x, state)
    assert_close(outputs, expected_outputs)
    assert_state_close(final, expected_final)
    # A zero state passed in is the same as none.
    assert_close(layer(x, layer.init_state(B, dtype=x.dtype))[0], zero_outputs)


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_initial_state_single_layer_by_hand(name):
    layer = make(name)
    x = inputs()
    state = random_state(layer)
    outputs, final = layer(x, state)
    expected, expected_final = run_cell(layer.cells[0], x, cell_state(layer, state, 0), default_times(layer, B, T, x.dtype, state))
    assert_close(outputs, expected)
    assert_state_close(cell_state(layer, final, 0), expected_final)


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_initial_state_plain_tuple_accepted(name):
    layer = make(name)
    x = inputs()
    state = random_state(layer)
    assert_close(layer(x, tuple(state))[0], layer(x, state)[0])


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
@pytest.mark.parametrize("wrong", ["hidden", "layers", "batch", "fields"])
def test_wrong_state_shape_raises(name, wrong):
    layer = make(name, num_layers=2)
    x = inputs()
    fields = len(layer.state_type._fields)
    shape = {"hidden": (2, B, H + 1), "layers": (1, B, H), "batch": (2, B + 1, H), "fields": (2, B, H)}[wrong]
    count = fields + 1 if wrong == "fields" else fields
    state = tuple(torch.zeros(shape, dtype=x.dtype) for _ in range(count))
    with pytest.raises(ValueError, match="state must be"):
        layer(x, state)


# --- continuing a sequence across calls ---------------------------------------------------------------


# The scan loop runs torch's scan operator eagerly (6-14 s a cell here): two cells by default.
SCAN_BY_DEFAULT = ("janet", "indrnn")


@pytest.mark.parametrize(
    ("name", "path"),
    [
        pytest.param(name, path, marks=pytest.mark.slow if path == "scan" and name not in SCAN_BY_DEFAULT else ())
        for name in SEQUENCE_CELLS
        for path in ("fused", "reference", "scan")
    ],
)
def test_a_sequence_fed_in_pieces_with_its_state_equals_one_call(name, path):
    # Whatever a cell needs to continue a sequence travels with its state (the Phased LSTM's next
    # default timestamp among it): steps 0-3 then 4-9 give what steps 0-9 give, to the last bit
    # the arithmetic allows. Eval mode: dropout masks are drawn per call by design.
    layer = make(name, num_layers=2, fused=path == "fused", time_loop="scan" if path == "scan" else "python").eval()
    x = inputs()
    whole, whole_final = layer(x)
    first, state = layer(x[:, :4])
    second, final = layer(x[:, 4:], state)
    assert_close(torch.cat([first, second], dim=1), whole)
    assert_state_close(final, whole_final)
    # Likewise with some sequences ending in the second piece.
    lengths = torch.tensor([T, 5, 5])  # each past the first piece
    whole, whole_final = layer(x, lengths=lengths)
    second, final = layer(x[:, 4:], state, lengths=lengths - 4)
    assert_close(second, whole[:, 4:])
    assert_state_close(final, whole_final)


# --- determinism ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_same_seed_same_outputs(name):
    def build_and_run():
        torch.manual_seed(1234)
        layer = make(name, num_layers=2, bidirectional=True, dropout=0.3).train()
        x = inputs()
        return layer(x, lengths=torch.tensor(LENGTHS))

    first_outputs, first_state = build_and_run()
    second_outputs, second_state = build_and_run()
    assert torch.equal(first_outputs, second_outputs)
    for a, b in zip(first_state, second_state):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_different_seeds_different_weights(name):
    torch.manual_seed(1)
    first = make(name)
    torch.manual_seed(2)
    second = make(name)
    assert any(not torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
