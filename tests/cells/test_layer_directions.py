"""RecurrentLayer: bidirectional and stacked layers, dropout between layers, batch- and time-major layouts.

Each check compares the layer with its own cells stepped by hand (tests/cells/layer_reference.py):
the reverse direction with a hand reversal, a stack with outputs fed on by hand, and the time-major
layout with the transpose of the batch-major one. Dropout acts between layers, in training only.
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
    assert_nontrivial,
    assert_state_close,
    cell_state,
    default_times,
    inputs,
    make,
    random_state,
    random_times,
    reference,
    run_cell,
)

# --- bidirectional --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_bidirectional_output_and_state_shapes(name, num_layers):
    layer = make(name, bidirectional=True, num_layers=num_layers)
    assert len(layer.cells) == 2 * num_layers
    assert layer.output_size == 2 * H
    outputs, state = layer(inputs())
    assert outputs.shape == (B, T, 2 * H)
    assert type(state) is layer.state_type
    for field in state:
        assert field.shape == (2 * num_layers, B, H)


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_bidirectional_reverse_direction_matches_hand_reversal(name):
    layer = make(name, bidirectional=True)
    x = inputs()
    times = default_times(layer, B, T, x.dtype)
    outputs, state = layer(x)

    forward, forward_final = run_cell(layer.cells[0], x, None, times)
    backward, backward_final = run_cell(layer.cells[1], x.flip(1), None, None if times is None else times.flip(1))
    assert_nontrivial(backward)
    assert_close(outputs[..., :H], forward)
    assert_close(outputs[..., H:], backward.flip(1))
    assert_state_close(cell_state(layer, state, 0), forward_final)
    assert_state_close(cell_state(layer, state, 1), backward_final)


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_bidirectional_directions_have_their_own_weights(name):
    layer = make(name, bidirectional=True)
    assert layer.cells[0] is not layer.cells[1]
    assert not all(torch.equal(a, b) for a, b in zip(layer.cells[0].parameters(), layer.cells[1].parameters()))
    # Had the reverse cell run forwards, its half would equal it stepped forwards by hand.
    x = inputs()
    outputs, _ = layer(x)
    reverse_cell_forwards, _ = run_cell(layer.cells[1], x, None, default_times(layer, B, T, x.dtype))
    assert not torch.allclose(outputs[..., H:], reverse_cell_forwards)


# --- stacking and dropout ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_stacked_layers_match_feeding_outputs_by_hand(name):
    layer = make(name, num_layers=2, dropout=0.5)  # eval mode: the dropout must not act
    x = inputs()
    times = default_times(layer, B, T, x.dtype)
    outputs, state = layer(x)

    first, first_final = run_cell(layer.cells[0], x, None, times)
    second, second_final = run_cell(layer.cells[1], first, None, times)
    assert_nontrivial(second)
    assert layer.cells[1].input_size == H
    assert_close(outputs, second)
    assert_state_close(cell_state(layer, state, 0), first_final)
    assert_state_close(cell_state(layer, state, 1), second_final)


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_stacked_bidirectional_layers_match_hand_reference(name):
    layer = make(name, num_layers=2, bidirectional=True)
    assert layer.cells[2].input_size == 2 * H  # layer 1 reads both directions of layer 0
    x = inputs()
    outputs, state = layer(x)
    expected_outputs, expected_state = reference(layer, x)
    assert_nontrivial(outputs)
    assert_close(outputs, expected_outputs)
    assert_state_close(state, expected_state)


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_dropout_between_layers_active_in_training_only(name):
    x = inputs()
    layer = make(name, num_layers=2, dropout=0.5).train()
    first_outputs, first_state = layer(x)
    second_outputs, second_state = layer(x)
    assert not torch.equal(first_outputs, second_outputs), "dropout=0.5 in train mode changed nothing"
    # The dropout sits between layers: layer 0's final state is untouched by it, layer 1's is not
    # (the Phased LSTM's next timestamp counts steps, whatever the data).
    for field, a, b in zip(first_state._fields, first_state, second_state):
        assert torch.equal(a[0], b[0])
        assert torch.equal(a[1], b[1]) if field == "time" else not torch.equal(a[1], b[1])

    # Without dropout two training forwards agree, so the difference above is the dropout's.
    no_dropout = make(name, num_layers=2, dropout=0.0)
    no_dropout.load_state_dict(layer.state_dict())
    no_dropout.train()
    assert torch.equal(no_dropout(x)[0], no_dropout(x)[0])

    # In eval mode the dropout is off: same as the layer built without it.
    layer.eval()
    no_dropout.eval()
    eval_outputs, eval_state = layer(x)
    assert torch.equal(eval_outputs, layer(x)[0])
    expected_outputs, expected_state = no_dropout(x)
    assert_close(eval_outputs, expected_outputs)
    assert_state_close(eval_state, expected_state)


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_single_layer_has_no_dropout_on_its_output(name):
    layer = make(name, num_layers=1, dropout=0.5).train()
    x = inputs()
    assert torch.equal(layer(x)[0], layer(x)[0])


# --- layouts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["unidirectional", "bidirectional"])
def test_batch_first_false_gives_transpose(name, bidirectional):
    batch_major = make(name, batch_first=True, bidirectional=bidirectional, num_layers=2)
    time_major = make(name, batch_first=False, bidirectional=bidirectional, num_layers=2)
    time_major.load_state_dict(batch_major.state_dict())
    x = inputs()
    state = random_state(batch_major)
    lengths = torch.tensor(LENGTHS)
    times = random_times() if batch_major.takes_time else None

    expected_outputs, expected_state = batch_major(x, state, lengths=lengths, times=times)
    outputs, final = time_major(x.transpose(0, 1), state, lengths=lengths, times=None if times is None else times.transpose(0, 1))
    assert outputs.shape == (T, B, batch_major.output_size)
    assert_nontrivial(outputs)
    assert_close(outputs.transpose(0, 1), expected_outputs)
    assert_state_close(final, expected_state)  # states are (L*D, B, H) in both layouts


def test_phased_lstm_times_follow_input_layout():
    layer = make("phased_lstm", batch_first=False)
    x = inputs().transpose(0, 1)  # (T, B, I)
    times = random_times()  # (B, T)
    with pytest.raises(ValueError, match=r"times must have shape \(6, 3\)"):
        layer(x, times=times)
    outputs, _ = layer(x, times=times.transpose(0, 1))
    expected, _ = reference(layer, x.transpose(0, 1), times=times)
    assert_close(outputs.transpose(0, 1), expected)


def test_phased_lstm_default_times_are_step_indices():
    layer = make("phased_lstm", bidirectional=True)
    x = inputs()
    assert_close(layer(x)[0], layer(x, times=torch.arange(T, dtype=x.dtype).expand(B, T))[0])
    # ...and explicit times matter.
    assert not torch.allclose(layer(x)[0], layer(x, times=random_times())[0])
