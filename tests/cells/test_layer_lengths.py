"""RecurrentLayer with variable lengths: padding, whatever it holds, never reaches outputs, states or gradients.

A padded batch must give each sequence what it gives run alone at its own length and what its cells
stepped by hand give (tests/cells/layer_reference.py): outputs zero past each end, the final state
that of the last valid step, the reverse direction starting there.
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
    default_times,
    inputs,
    make,
    pad_with_garbage,
    random_state,
    random_times,
    reference,
    run_cell,
    times_with_garbage,
)

# --- variable lengths -------------------------------------------------------------------------------


def _run_alone(layer, x, b, n, state=None, times=None):
    """Run the layer on sequence ``b`` alone, cut at its length: no padding at all."""
    alone_state = None if state is None else layer.state_type(*(field[:, b : b + 1] for field in state))
    alone_times = None if times is None else times[b : b + 1, :n]
    return layer(x[b : b + 1, :n], alone_state, times=alone_times)


def _check_lengths(layer, x, lengths, state=None, times=None):
    clean = x
    padded = pad_with_garbage(x, lengths)
    padded_times = None if times is None else times_with_garbage(times, lengths)
    lengths_tensor = torch.tensor(lengths)
    outputs, final = layer(padded, state, lengths=lengths_tensor, times=padded_times)
    assert outputs.shape == (B, T, layer.output_size)
    assert_nontrivial(outputs)

    for b, n in enumerate(lengths):
        alone_outputs, alone_final = _run_alone(layer, clean, b, n, state, times)
        assert_close(outputs[b, :n], alone_outputs[0], msg=lambda m, b=b: f"sequence {b}, valid steps: {m}")
        assert torch.equal(outputs[b, n:], torch.zeros_like(outputs[b, n:])), f"sequence {b}: outputs past its end are not zero"
        for field, expected in zip(final, alone_final):
            assert_close(field[:, b], expected[:, 0], msg=lambda m, b=b: f"sequence {b}, final state: {m}")

    # And against the cells stepped by hand, one sequence at a time.
    expected_outputs, expected_final = reference(layer, clean, state, lengths, times)
    assert_close(outputs, expected_outputs)
    assert_state_close(final, expected_final)
    return outputs, final


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_padding_never_changes_valid_outputs_or_final_state(name):
    _check_lengths(make(name), inputs(), LENGTHS)


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_final_state_is_state_at_last_valid_step(name):
    layer = make(name)
    x = inputs()
    _, final = layer(pad_with_garbage(x, LENGTHS), lengths=torch.tensor(LENGTHS))
    times = default_times(layer, B, T, x.dtype)
    for b, n in enumerate(LENGTHS):
        _, state_at_end = run_cell(layer.cells[0], x[b : b + 1, :n], None, None if times is None else times[b : b + 1, :n])
        for field, expected in zip(final, state_at_end):
            assert_close(field[0, b], expected[0])
    # ...and not the state after the padding.
    _, full_run_final = layer(pad_with_garbage(x, LENGTHS))
    assert not torch.allclose(final[0][0, 1], full_run_final[0][0, 1])


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_lengths_with_bidirectional_reverse_starts_at_last_valid_step(name):
    layer = make(name, bidirectional=True)
    x = inputs()
    outputs, _ = _check_lengths(layer, x, LENGTHS)
    # Spelled out for the short sequence: its reverse half is its cell run from its last valid step back.
    b, n = 1, LENGTHS[1]
    times = default_times(layer, 1, n, x.dtype)
    backward, _ = run_cell(layer.cells[1], x[b : b + 1, :n].flip(1), None, None if times is None else times.flip(1))
    assert_close(outputs[b, :n, H:], backward[0].flip(0))


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_lengths_with_stacked_bidirectional_layers_and_initial_state(name):
    layer = make(name, bidirectional=True, num_layers=2)
    _check_lengths(layer, inputs(), LENGTHS, state=random_state(layer))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["unidirectional", "bidirectional"])
def test_lengths_phased_lstm_with_explicit_times(bidirectional):
    layer = make("phased_lstm", bidirectional=bidirectional)
    _check_lengths(layer, inputs(), LENGTHS, times=random_times())


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_lengths_all_full_equals_no_lengths(name):
    layer = make(name, bidirectional=True)
    x = inputs()
    with_lengths = layer(x, lengths=torch.full((B,), T))
    without = layer(x)
    assert_close(with_lengths[0], without[0])
    assert_state_close(with_lengths[1], without[1])


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_lengths_gradients_do_not_reach_padding(name):
    layer = make(name, bidirectional=True, num_layers=2)
    x = pad_with_garbage(inputs(), LENGTHS).requires_grad_()
    outputs, final = layer(x, lengths=torch.tensor(LENGTHS))
    (outputs.sum() + sum(field.sum() for field in final)).backward()
    for b, n in enumerate(LENGTHS):
        assert torch.equal(x.grad[b, n:], torch.zeros_like(x.grad[b, n:])), f"sequence {b}: gradient flows into padding"
        assert x.grad[b, :n].abs().sum() > 0


def _non_finite_padded(x: torch.Tensor, fill: float) -> torch.Tensor:
    padded = x.clone()
    for b, n in enumerate(LENGTHS):
        padded[b, n:] = fill
    return padded


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
@pytest.mark.parametrize("fill", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_padding_does_not_leak_into_outputs(name, fill):
    """Padding is ignored whatever it holds: NaN-filled padding (a common 'missing' marker) too."""
    layer = make(name, bidirectional=True, num_layers=2)
    x = inputs()
    outputs, final = layer(_non_finite_padded(x, fill), lengths=torch.tensor(LENGTHS))
    expected_outputs, expected_final = reference(layer, x, None, LENGTHS)
    assert_state_close(final, expected_final)
    assert_close(outputs, expected_outputs)  # includes: exactly zero past each end


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
@pytest.mark.parametrize("fill", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_padding_keeps_gradients_finite(name, fill):
    layer = make(name, bidirectional=True, num_layers=2)
    padded = _non_finite_padded(inputs(), fill).requires_grad_()
    outputs, final = layer(padded, lengths=torch.tensor(LENGTHS))
    valid = torch.arange(T) < torch.tensor(LENGTHS).unsqueeze(1)  # (B, T): the loss reads valid steps only
    (outputs[valid].sum() + sum(field.sum() for field in final)).backward()
    for name_, parameter in layer.named_parameters():
        assert torch.isfinite(parameter.grad).all(), f"gradient of {name_} is not finite"
    assert torch.isfinite(padded.grad).all()
