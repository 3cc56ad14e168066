"""RecurrentLayer: bidirectional, stacked, variable lengths, layouts, the fused LSTM path, CUDA parity.

Every check compares the layer with its own cells stepped by hand (``cell(x_t, state)``), the
plainest reading of what the layer must compute. Shapes are tiny and most comparisons run in
float64 so that tolerances can stay tight.
"""

from __future__ import annotations

import copy
import warnings

import pytest
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


# --- the fused torch.nn.LSTM path -------------------------------------------------------------------


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_runs_on_torch_lstm_flag(name):
    assert make(name).runs_on_torch_lstm is (name in FUSED_CELLS)
    assert make(name, fused=False).runs_on_torch_lstm is False


@pytest.mark.parametrize("name", FUSED_CELLS)
def test_fused_path_skips_the_python_loop(name, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the python step loop ran")

    layer = make(name, num_layers=2, bidirectional=True)
    monkeypatch.setattr(RecurrentLayer, "_run_direction", staticmethod(forbidden))
    layer(inputs(), lengths=torch.tensor(LENGTHS))  # must not raise
    with pytest.raises(AssertionError, match="python step loop"):
        make(name, fused=False)(inputs())


def _loss_weights(outputs, state, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(outputs.shape, generator=generator, dtype=outputs.dtype), [
        torch.randn(field.shape, generator=generator, dtype=field.dtype) for field in state
    ]


def _forward_backward(layer, x, state, lengths):
    x = x.clone().requires_grad_()
    state = layer.state_type(*(field.clone().requires_grad_() for field in state))
    layer.zero_grad()
    outputs, final = layer(x, state, lengths=lengths)
    output_weight, state_weights = _loss_weights(outputs, final)
    loss = (outputs * output_weight).sum() + sum((f * w).sum() for f, w in zip(final, state_weights))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    return outputs, final, grads, x.grad, [field.grad for field in state]


@pytest.mark.parametrize("name", FUSED_CELLS)
@pytest.mark.parametrize(
    "config",
    [
        dict(num_layers=1, bidirectional=False, lengths=None, batch_first=True, train=False),
        dict(num_layers=2, bidirectional=True, lengths=LENGTHS, batch_first=True, train=False),
        dict(num_layers=2, bidirectional=True, lengths=LENGTHS, batch_first=False, train=True),
    ],
    ids=["plain", "bidirectional-2layers-lengths", "time-major-training"],
)
def test_fused_matches_python_loop(name, config):
    config = dict(config)
    lengths = config.pop("lengths")
    train = config.pop("train")
    fused = make(name, fused=True, **config)
    loop = make(name, fused=False, **config)
    loop.load_state_dict(fused.state_dict())
    assert fused.runs_on_torch_lstm and not loop.runs_on_torch_lstm
    fused.train(train)
    loop.train(train)

    x = inputs()
    lengths = None if lengths is None else torch.tensor(lengths)
    if lengths is not None:
        x = pad_with_garbage(x, LENGTHS)
    if not fused.batch_first:
        x = x.transpose(0, 1)
    state = random_state(fused)

    out_f, final_f, grads_f, x_grad_f, state_grads_f = _forward_backward(fused, x, state, lengths)
    out_l, final_l, grads_l, x_grad_l, state_grads_l = _forward_backward(loop, x, state, lengths)
    assert_nontrivial(out_f)
    assert_close(out_f, out_l)
    assert_state_close(final_f, final_l)
    assert grads_f.keys() == grads_l.keys()
    for key in grads_f:
        assert_close(grads_f[key], grads_l[key], msg=lambda m, key=key: f"gradient of {key}: {m}")
    assert_close(x_grad_f, x_grad_l)
    for a, b in zip(state_grads_f, state_grads_l):
        assert_close(a, b)


@pytest.mark.parametrize("name", FUSED_CELLS)
def test_fused_matches_torch_nn_lstm(name):
    layer = make(name, num_layers=2, bidirectional=True)
    module = cells.to_torch_lstm(layer).eval()
    x = inputs()
    outputs, (h, c) = module(x)
    ours, state = layer(x)
    assert_close(ours, outputs)
    assert_close(state.h, h)
    assert_close(state.c, c)


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
        ([0, 2, 3], r"lengths must lie in \[1, 6\]"),
        ([7, 2, 3], r"lengths must lie in \[1, 6\]"),
        ([-1, 2, 3], r"lengths must lie in \[1, 6\]"),
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


# --- CUDA -------------------------------------------------------------------------------------------

CUDA_CASES = [(name, True) for name in SEQUENCE_CELLS] + [("lstm", False), ("chrono_lstm", False)]


@pytest.fixture
def exact_cuda_float32():
    """cuDNN may use TF32 for float32 RNNs by default; the parity check wants full float32."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


def _cuda_run(layer, x, state, lengths, times):
    x = x.clone().requires_grad_()
    layer.zero_grad()
    outputs, final = layer(x, state, lengths=lengths, times=times)
    output_weight, state_weights = _loss_weights(outputs.cpu(), [f.cpu() for f in final])
    loss = (outputs * output_weight.to(outputs.device)).sum()
    loss = loss + sum((f * w.to(f.device)).sum() for f, w in zip(final, state_weights))
    loss.backward()
    grads = {name: p.grad.detach().cpu() for name, p in layer.named_parameters()}
    return outputs.detach().cpu(), [f.detach().cpu() for f in final], grads, x.grad.cpu()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name, fused", CUDA_CASES, ids=[n if f else f"{n}-unfused" for n, f in CUDA_CASES])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["unidirectional", "bidirectional"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_cuda_matches_cpu(name, fused, bidirectional, mode, exact_cuda_float32):
    """Outputs, final state and gradients; eval mode too (gradients for analysis, e.g. saliency)."""
    cpu = make(name, dtype=torch.float32, num_layers=2, bidirectional=bidirectional, fused=fused).train(mode == "train")
    gpu = copy.deepcopy(cpu).cuda()
    assert gpu.runs_on_torch_lstm == (fused and name in FUSED_CELLS)
    x = pad_with_garbage(inputs(dtype=torch.float32), LENGTHS, scale=10.0)
    lengths = torch.tensor(LENGTHS)
    state = random_state(cpu, dtype=torch.float32)
    times = random_times(dtype=torch.float32) if cpu.takes_time else None

    expected = _cuda_run(cpu, x, state, lengths, times)
    actual = _cuda_run(
        gpu, x.cuda(), type(state)(*(f.cuda() for f in state)), lengths.cuda(), None if times is None else times.cuda()
    )
    tolerance = dict(atol=1e-4, rtol=1e-4)
    assert_nontrivial(expected[0])
    assert_close(actual[0], expected[0], **tolerance)
    for a, e in zip(actual[1], expected[1]):
        assert_close(a, e, **tolerance)
    for key in expected[2]:
        assert_close(actual[2][key], expected[2][key], msg=lambda m, key=key: f"gradient of {key}: {m}", **tolerance)
    assert_close(actual[3], expected[3], **tolerance)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", FUSED_CELLS)
def test_cuda_fused_weights_are_flattened_for_cudnn(name):
    layer = make(name, dtype=torch.float32, num_layers=2, bidirectional=True).cuda().train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs, _ = layer(inputs(dtype=torch.float32).cuda())
        outputs.sum().backward()
    messages = [str(w.message) for w in caught]
    assert not any("contiguous chunk" in m for m in messages), messages
