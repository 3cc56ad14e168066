"""Phased LSTM (Neil et al. 2016): an LSTM gated by a learned per-unit time oscillation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.testing import assert_close

from rnnzoo import cells
from rnnzoo.cells.lstm import LSTMCell, LSTMState
from rnnzoo.cells.phased_lstm import PhasedLSTMCell, PhasedLSTMState
from tests.cells.references import gradcheck_cell, lstm_cell_step, phased_lstm_step, phased_time_gate, randomize_

B, T, I, H = 2, 5, 3, 4


def _set_gate(cell: PhasedLSTMCell, period: list[float], shift: list[float], ratio_on: list[float]) -> None:
    with torch.no_grad():
        cell.period.copy_(torch.tensor(period, dtype=cell.period.dtype))
        cell.shift.copy_(torch.tensor(shift, dtype=cell.shift.dtype))
        cell.ratio_on.copy_(torch.tensor(ratio_on, dtype=cell.ratio_on.dtype))


def _hand_picked_cell() -> PhasedLSTMCell:
    cell = PhasedLSTMCell(I, 5, leak=0.01).double()
    _set_gate(cell, [10.0, 10.0, 10.0, 10.0, 4.0], [0.0, 8.6, 5.0, 1.0, 0.0], [0.2, 0.2, 0.2, 0.2, 0.6])
    return cell


# Times 0.4, 1.1, 20.4 (one period of 10 and five of 4 after 0.4) and -6.6. Per unit φ and k:
#   unit 0 (τ 10, s 0,   r .2): φ .04 rise -> .4 | φ .11 fall -> .9 | = t .4 | φ .34 closed
#   unit 1 (τ 10, s 8.6, r .2): φ .18 fall -> .2 | φ .25 closed       | = t .4 | φ .48 closed
#   unit 2 (τ 10, s 5,   r .2): φ .54 closed     | φ .61 closed       | = t .4 | φ .84 closed
#   unit 3 (τ 10, s 1,   r .2): φ .94 closed     | φ .01 rise -> .1   | = t .4 | φ .24 closed
#   unit 4 (τ 4,  s 0,   r .6): φ .1 rise -> 1/3 | φ .275 rise -> .55/.6 | = t .4 | φ .35 fall -> 2 - .7/.6
HAND_TIMES = [0.4, 1.1, 20.4, -6.6]
OPEN_K = [
    [0.4, 0.2, None, None, 1.0 / 3.0],
    [0.9, None, None, 0.1, 0.55 / 0.6],
    [0.4, 0.2, None, None, 1.0 / 3.0],
    [None, None, None, None, 2.0 - 0.7 / 0.6],
]
CLOSED_PHASE = [
    [None, None, 0.54, 0.94, None],
    [None, 0.25, 0.61, None, None],
    [None, None, 0.54, 0.94, None],
    [0.34, 0.48, 0.84, 0.24, None],
]


@pytest.mark.parametrize("training", [True, False])
def test_phased_lstm_time_gate_matches_closed_form_at_hand_picked_phases(training: bool) -> None:
    cell = _hand_picked_cell().train(training)
    with torch.no_grad():
        k = cell.time_gate(torch.tensor(HAND_TIMES, dtype=torch.float64))
    assert k.shape == (4, 5)
    for row in range(4):
        for unit in range(5):
            if OPEN_K[row][unit] is not None:
                expected = OPEN_K[row][unit]  # 2φ/r_on rising, 2 - 2φ/r_on falling
            elif training:
                expected = 0.01 * CLOSED_PHASE[row][unit]  # leak * φ
            else:
                expected = 0.0  # eval: a closed gate holds the state exactly
            assert float(k[row, unit]) == pytest.approx(expected, abs=1e-9), (row, unit, training)


def test_phased_lstm_time_gate_matches_reference_on_random_phases() -> None:
    cell = PhasedLSTMCell(I, 16, ratio_on=0.3, leak=0.02).double()
    with torch.no_grad():
        cell.ratio_on.uniform_(0.05, 0.9)
    times = torch.rand(64, dtype=torch.float64) * 1000.0 - 100.0
    for training in (True, False):
        cell.train(training)
        expected = phased_time_gate(times, cell.period, cell.shift, cell.ratio_on, 0.02 if training else 0.0)
        assert_close(cell.time_gate(times), expected)
    # Every regime shows up, so the comparison covers them all.
    phase = torch.remainder(times[:, None] - cell.shift, cell.period) / cell.period
    assert bool((phase < cell.ratio_on / 2).any()) and bool((phase >= cell.ratio_on).any())
    assert bool(((phase >= cell.ratio_on / 2) & (phase < cell.ratio_on)).any())


@pytest.mark.parametrize("training", [True, False])
def test_phased_lstm_step_matches_equations(training: bool) -> None:
    cell = PhasedLSTMCell(I, H, ratio_on=0.5, leak=0.05).train(training)
    randomize_(cell)
    _set_gate(cell, [2.0, 3.0, 5.0, 7.0], [0.1, 0.5, 1.0, 2.0], [0.5, 0.6, 0.3, 0.8])
    x, h, c = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    time = torch.tensor([0.7, 3.9])
    out, state = cell(x, LSTMState(h, c), time=time)
    with torch.no_grad():
        h_ref, c_ref = phased_lstm_step(cell, x, h, c, time)
        k = phased_time_gate(time, cell.period, cell.shift, cell.ratio_on, 0.0)
    assert bool((k > 0).any()) and bool((k == 0).any())  # both open and closed units
    assert_close(out, h_ref)
    assert_close(state.h, h_ref)
    assert_close(state.c, c_ref)


def test_phased_lstm_closed_gate_holds_state_in_eval() -> None:
    cell = randomize_(PhasedLSTMCell(I, H)).eval()
    _set_gate(cell, [10.0] * 4, [0.0] * 4, [0.1] * 4)
    h, c = torch.randn(B, H), torch.randn(B, H)
    out, state = cell(torch.randn(B, I), LSTMState(h, c), time=torch.tensor([5.0, 7.0]))  # φ .5, .7: closed
    assert torch.equal(state.h, h) and torch.equal(state.c, c) and torch.equal(out, h)
    cell.train()
    out, state = cell(torch.randn(B, I), LSTMState(h, c), time=torch.tensor([5.0, 7.0]))
    assert not torch.equal(state.c, c)  # training leaks


def test_phased_lstm_open_gate_equals_lstm_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = randomize_(PhasedLSTMCell(I, H))
    monkeypatch.setattr(cell, "time_gate", lambda time: torch.ones(time.shape[0], H))
    lstm = LSTMCell(I, H)
    missing, unexpected = lstm.load_state_dict(cell.state_dict(), strict=False)
    assert not missing and sorted(unexpected) == ["period", "ratio_on", "shift"]
    x, h, c = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    out, state = cell(x, LSTMState(h, c), time=torch.tensor([0.3, 123.0]))
    lstm_out, lstm_state = lstm(x, LSTMState(h, c))
    assert_close(out, lstm_out)
    assert_close(state.c, lstm_state.c)
    with torch.no_grad():
        assert_close(out, lstm_cell_step(lstm, x, h, c)[0])


@pytest.mark.parametrize("fused", [False, True])
def test_phased_lstm_open_gate_layer_equals_lstm_layer(monkeypatch: pytest.MonkeyPatch, fused: bool) -> None:
    # The reference loop (fused=False): it is the one that calls time_gate, which this test replaces;
    # the fused loop computes the gate itself and is held to this loop by test_fused_loops.
    layer = cells.make("phased_lstm", I, H, num_layers=2, fused=False)
    randomize_(layer)
    for cell in layer.cells:
        monkeypatch.setattr(cell, "time_gate", lambda time: torch.ones(time.shape[0], H))
    lstm = cells.make("lstm", I, H, num_layers=2, fused=fused)
    lstm.load_state_dict(layer.state_dict(), strict=False)
    x = torch.randn(B, T, I)
    outputs, final = layer(x, times=torch.rand(B, T) * 50)
    expected, expected_final = lstm(x)
    assert_close(outputs, expected)
    assert_close(final.c, expected_final.c)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_phased_lstm_layer_equals_stepping_the_cell(fused: bool, training: bool) -> None:
    layer = cells.make("phased_lstm", I, H, ratio_on=0.5, fused=fused).train(training)
    randomize_(layer)
    cell = layer.cells[0]
    _set_gate(cell, [2.0, 3.0, 5.0, 7.0], [0.1, 0.5, 1.0, 2.0], [0.5, 0.6, 0.3, 0.8])
    x = torch.randn(B, T, I)
    times = torch.cumsum(torch.rand(B, T) * 2.0, dim=1)
    h0, c0 = torch.randn(1, B, H), torch.randn(1, B, H)
    outputs, final = layer(x, PhasedLSTMState(h0, c0, torch.zeros(1, B, H)), times=times)
    state, expected, reference = PhasedLSTMState(h0[0], c0[0], torch.zeros(B, H)), [], []
    h_ref, c_ref = h0[0], c0[0]
    for t in range(T):
        h, state = cell(x[:, t], state, time=times[:, t])
        expected.append(h)
        with torch.no_grad():
            h_ref, c_ref = phased_lstm_step(cell, x[:, t], h_ref, c_ref, times[:, t])
        reference.append(h_ref)
    assert_close(outputs, torch.stack(expected, 1))
    assert_close(outputs, torch.stack(reference, 1))
    assert_close(final.h[0], state.h)
    assert_close(final.c[0], state.c)
    assert_close(final.time[0], (times[:, -1:] + 1).expand(B, H), msg="the next default timestamp: the last + 1")
    assert_close(state.time, (times[:, -1:] + 1).expand(B, H))


@pytest.mark.parametrize("batch_first", [True, False])
def test_phased_lstm_layer_times_default_to_step_indices(batch_first: bool) -> None:
    layer = cells.make("phased_lstm", I, H, ratio_on=0.6, batch_first=batch_first)
    randomize_(layer)
    for cell in layer.cells:
        _set_gate(cell, [3.0, 4.0, 5.0, 2.5], [0.0, 1.0, 0.5, 0.2], [0.6, 0.6, 0.6, 0.6])
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    indices = torch.arange(T, dtype=torch.float32).expand(B, T)
    if not batch_first:
        indices = indices.t()
    default, default_final = layer(x)
    explicit, explicit_final = layer(x, times=indices)
    assert_close(default, explicit)
    assert_close(default_final.c, explicit_final.c)
    shifted, _ = layer(x, times=indices + 0.37)
    assert (shifted - default).abs().max() > 1e-3  # the times really reach the gate


@pytest.mark.parametrize("batch_first", [True, False])
def test_phased_lstm_layer_rejects_times_of_wrong_shape(batch_first: bool) -> None:
    layer = cells.make("phased_lstm", I, H, batch_first=batch_first)
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    expected = r"\(2, 5\)" if batch_first else r"\(5, 2\)"
    with pytest.raises(ValueError, match=rf"times.*{expected}.*\(2, 4\)"):
        layer(x, times=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"times.*\(2, 5, 1\)"):
        layer(x, times=torch.zeros(2, 5, 1))
    with pytest.raises(ValueError, match=r"times.*\(10,\)"):
        layer(x, times=torch.zeros(10))
    wrong = torch.zeros(T, B) if batch_first else torch.zeros(B, T)
    with pytest.raises(ValueError, match="times"):
        layer(x, times=wrong)


def test_phased_lstm_cell_step_without_time_takes_the_states_next_timestamp() -> None:
    cell = PhasedLSTMCell(I, H, ratio_on=0.5).eval()
    x = torch.randn(B, I)
    h, state = cell(x)  # a fresh state: timestamp 0
    assert_close(h, cell(x, time=torch.zeros(B))[0])
    assert_close(state.time, torch.ones(B, H))
    later = PhasedLSTMState(state.h, state.c, torch.tensor([[4.0], [9.0]]).expand(B, H))
    assert_close(cell(x, later)[0], cell(x, later, time=torch.tensor([4.0, 9.0]))[0])


def test_phased_lstm_cell_rejects_misshapen_time() -> None:
    cell = PhasedLSTMCell(I, H)
    x = torch.randn(B, I)
    with pytest.raises(ValueError, match=r"time.*\(2,\).*\(3,\)"):
        cell(x, time=torch.zeros(3))
    with pytest.raises(ValueError, match=r"time.*\(2, 1\)"):
        cell(x, time=torch.zeros(2, 1))


def test_phased_lstm_init_ranges() -> None:
    cell = PhasedLSTMCell(I, 512)
    period, shift = cell.period.detach(), cell.shift.detach()
    assert float(period.min()) >= math.e - 1e-4 and float(period.max()) <= math.exp(6.0) + 1e-2
    log_period = period.log()
    assert float(log_period.min()) < 1.2 and float(log_period.max()) > 5.8  # exp(U(1, 6)), spread
    assert bool((shift >= 0).all()) and bool((shift <= period).all())
    assert float((shift / period).min()) < 0.05 and float((shift / period).max()) > 0.95
    assert torch.equal(cell.ratio_on.detach(), torch.full((512,), 0.05))
    custom = PhasedLSTMCell(I, 64, ratio_on=0.3, log_period_low=0.0, log_period_high=2.0)
    assert float(custom.period.detach().min()) >= 1.0 - 1e-6 and float(custom.period.detach().max()) <= math.exp(2.0) + 1e-5
    assert torch.equal(custom.ratio_on.detach(), torch.full((64,), 0.3))
    names = {name for name, _ in cell.named_parameters()}
    assert {"period", "shift", "ratio_on"} <= names  # learned


def test_phased_lstm_gradcheck_away_from_gate_kinks() -> None:
    cell = PhasedLSTMCell(3, 4, leak=0.01).double().train()
    _set_gate(cell, [3.0, 5.0, 7.0, 11.0], [0.3, 1.1, 2.0, 0.5], [0.5, 0.4, 0.6, 0.3])
    times = torch.tensor([[0.9, 2.4, 4.4], [1.5, 3.6, 5.9]], dtype=torch.float64)
    # Every phase is at least 0.01 away from the kinks (0, r_on/2, r_on, 1), and every regime occurs.
    phase = torch.remainder(times[..., None] - cell.shift.detach(), cell.period.detach()) / cell.period.detach()
    r_on = cell.ratio_on.detach()
    kinks = torch.stack([phase, (phase - r_on / 2).abs(), (phase - r_on).abs(), 1 - phase])
    assert float(kinks.min()) > 0.01
    assert bool((phase < r_on / 2).any()) and bool(((phase > r_on / 2) & (phase < r_on)).any()) and bool((phase > r_on).any())
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    h0, c0 = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)

    def run(module, x, h, c, times):
        state, outs = LSTMState(h, c), []
        for t in range(x.shape[1]):
            out, state = module(x[:, t], state, time=times[:, t])
            outs.append(out)
        return torch.stack(outs, 1), state.c

    assert gradcheck_cell(cell, run, [x, h0, c0, times])
    # The time-gate parameters really receive gradient (not a vacuous check).
    out, c = run(cell, x, h0, c0, times)
    (out.sum() + c.sum()).backward()
    for parameter in (cell.period, cell.shift, cell.ratio_on):
        assert float(parameter.grad.abs().max()) > 0


def test_phased_lstm_rejects_bad_inputs() -> None:
    layer = cells.make("phased_lstm", I, H)
    with pytest.raises(ValueError, match=r"2 features.*input_size=3"):
        layer(torch.randn(B, T, 2))
    with pytest.raises(ValueError, match=r"3-D.*\(2, 3\)"):
        layer(torch.randn(B, I))
    with pytest.raises(ValueError, match="hidden_size.*-1"):
        cells.make("phased_lstm", I, -1)
    with pytest.raises(ValueError, match="input_size.*0"):
        cells.make("phased_lstm", 0, H)
    with pytest.raises(ValueError, match="ratio_on.*0"):
        PhasedLSTMCell(I, H, ratio_on=0.0)
    with pytest.raises(ValueError, match="leak.*1.5"):
        PhasedLSTMCell(I, H, leak=1.5)


@pytest.mark.parametrize("given", [True, False], ids=["given-times", "default-times"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_bfloat16_model_keeps_timestamps_past_256_exact(fused, given):
    """A bfloat16 model's timestamps stay float32 (bfloat16 holds integers exactly only to 256):
    past step 256 its outputs follow the float32 model with the same weights to bfloat16's
    rounding, given timestamps or the default 0, 1, 2, ... (rounded, they drifted 30-60% off)."""
    torch.manual_seed(0)
    model = cells.make("phased_lstm", 2, 8, ratio_on=0.3, log_period_low=1.0, log_period_high=3.0, fused=fused).eval()
    model = model.to(torch.bfloat16)
    reference = copy.deepcopy(model).float()
    x = torch.randn(2, 300, 2).to(torch.bfloat16)
    times = torch.arange(300, dtype=torch.float32).expand(2, 300) + 0.5 if given else None
    outputs, _ = model(x, times=times)
    expected, _ = reference(x.float(), times=times)
    assert outputs.dtype == torch.bfloat16
    late = (outputs.float()[:, 257:] - expected[:, 257:]).abs().max() / expected[:, 257:].abs().max()
    assert late < 0.03, f"past step 256 the outputs differ by {late:.1%} of their largest value"
