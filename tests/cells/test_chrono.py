"""Chrono initialisation (Tallec & Ollivier 2018) and the chrono_lstm cell."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from rnnzoo import cells
from rnnzoo.cells.chrono_lstm import ChronoLSTMCell
from rnnzoo.cells.janet import JANETCell
from rnnzoo.cells.lstm import LSTMState
from tests.cells.references import gradcheck_cell, lstm_cell_step, randomize_

B, T, I, H = 2, 5, 3, 4


def _effective_biases(bias_ih: torch.Tensor, bias_hh: torch.Tensor, hidden: int) -> tuple[torch.Tensor, ...]:
    """(b_i, b_f, b_g, b_o): torch.nn.LSTM's two bias vectors summed, gate order i, f, g, o."""
    total = (bias_ih + bias_hh).detach()
    return tuple(total[k * hidden : (k + 1) * hidden] for k in range(4))


def _assert_chrono(b_i: torch.Tensor, b_f: torch.Tensor, max_timescale: float) -> None:
    assert bool((b_f >= math.log(1.0) - 1e-6).all()), b_f
    assert bool((b_f <= math.log(max_timescale - 1.0) + 1e-6).all()), b_f
    assert_close(b_i, -b_f)


@pytest.mark.parametrize("max_timescale", [3.0, 10.0, 1000.0])
def test_chrono_lstm_biases_lie_in_chrono_range(max_timescale: float) -> None:
    layer = cells.make("chrono_lstm", I, 64, num_layers=2, bidirectional=True, max_timescale=max_timescale)
    assert len(layer.cells) == 4
    for cell in layer.cells:
        b_i, b_f, _, _ = _effective_biases(cell.bias_ih, cell.bias_hh, 64)
        _assert_chrono(b_i, b_f, max_timescale)


def test_chrono_lstm_forget_biases_spread_over_the_range() -> None:
    max_timescale = 100.0
    cell = ChronoLSTMCell(I, 512, max_timescale=max_timescale)
    _, b_f, _, _ = _effective_biases(cell.bias_ih, cell.bias_hh, 512)
    top = math.log(max_timescale - 1.0)
    assert b_f.unique().numel() > 500  # one draw a unit, not one value for all
    assert float(b_f.std()) > 0.2
    # log(U(1, T-1)): P(b_f < top/2) = (sqrt(99)-1)/98 ≈ 0.09, P(b_f > 0.9 top) ≈ 0.37
    assert float(b_f.min()) < 0.5 * top
    assert float(b_f.max()) > 0.9 * top
    # Another cell draws its own values.
    other = ChronoLSTMCell(I, 512, max_timescale=max_timescale)
    assert not torch.equal(other.bias_ih, cell.bias_ih)


def test_chrono_lstm_keeps_lstm_init_on_weights() -> None:
    cell = ChronoLSTMCell(I, 256, max_timescale=50.0)
    bound = 1.0 / math.sqrt(256)
    for weight in (cell.weight_ih, cell.weight_hh):
        assert bool((weight.abs() <= bound).all())
        assert float(weight.detach().std()) > 0.2 * bound  # still random, not zeroed


# Every place chrono init applies, as (name, build(max_timescale) -> module). The expected
# effective biases are the original code's: the Keras Chrono-LSTM's bias initialiser and the
# JANET authors' chrono_init (github.com/JosvanderWesthuizen/janet, aux_code/rnn_cells.py)
# both give b_f ~ log(U(1, T_max - 1)), b_i = -b_f and 0 on every other gate (the LSTM's
# candidate g and output o, JANET's candidate c).
CHRONO_SITES = {
    "chrono_lstm-layer": lambda t_max: cells.make("chrono_lstm", I, 64, num_layers=2, bidirectional=True, max_timescale=t_max),
    "chrono_lstm-cell": lambda t_max: ChronoLSTMCell(I, 64, max_timescale=t_max),
    "janet-cell": lambda t_max: JANETCell(I, 64, max_timescale=t_max),
    "janet-layer": lambda t_max: cells.make("janet", I, 64, num_layers=2, bidirectional=True, max_timescale=t_max),
    "torch-LSTM": lambda t_max: cells.chrono_initialize_(nn.LSTM(I, 64, num_layers=2, bidirectional=True), t_max),
    "torch-LSTMCell": lambda t_max: cells.chrono_initialize_(nn.LSTMCell(I, 64), t_max),
    "lstm-layer": lambda t_max: cells.chrono_initialize_(cells.make("lstm", I, 64, num_layers=2), t_max),
    "phased_lstm-layer": lambda t_max: cells.chrono_initialize_(cells.make("phased_lstm", I, 64), t_max),
}


def _effective_gate_biases(module: nn.Module) -> list[dict[str, torch.Tensor]]:
    """Each gated cell's effective bias per gate (two vectors summed), found from the known layouts."""
    found = []
    for sub in module.modules():
        if isinstance(sub, nn.LSTM):
            names = [name.removeprefix("bias_ih_") for name, _ in sub.named_parameters() if name.startswith("bias_ih_")]
            pairs = [(getattr(sub, f"bias_ih_{name}"), getattr(sub, f"bias_hh_{name}"), "ifgo") for name in names]
        elif isinstance(sub, (nn.LSTMCell, cells.LSTMCell)):  # ChronoLSTMCell, PhasedLSTMCell are LSTMCells
            pairs = [(sub.bias_ih, sub.bias_hh, "ifgo")]
        elif isinstance(sub, JANETCell):
            pairs = [(sub.bias, None, "fc")]
        else:
            continue
        for main, second, gates in pairs:
            total = (main if second is None else main + second).detach()
            found.append(dict(zip(gates, total.chunk(len(gates)))))
    return found


@pytest.mark.parametrize("max_timescale", [10.0, 784.0])
@pytest.mark.parametrize("site", list(CHRONO_SITES))
def test_chrono_init_sets_every_gate_bias_as_the_original_code(site: str, max_timescale: float) -> None:
    module = CHRONO_SITES[site](max_timescale)
    biases = _effective_gate_biases(module)
    assert biases, f"{site}: no gated cell found"
    for gate_biases in biases:
        b_f = gate_biases["f"]
        assert bool((b_f >= math.log(1.0) - 1e-6).all()), b_f
        assert bool((b_f <= math.log(max_timescale - 1.0) + 1e-6).all()), b_f
        assert b_f.unique().numel() > 32  # one draw a unit
        if "i" in gate_biases:
            assert_close(gate_biases["i"], -b_f)
        for gate in set(gate_biases) - {"i", "f"}:  # LSTM: g and o; JANET: c
            assert torch.equal(gate_biases[gate], torch.zeros_like(b_f)), f"{site}: gate {gate} bias {gate_biases[gate]}"


def test_chrono_lstm_requires_max_timescale() -> None:
    with pytest.raises(ValueError, match="max_timescale"):
        cells.make("chrono_lstm", I, H)


@pytest.mark.parametrize("bad", [2.0, 1.0, -5.0])
def test_chrono_lstm_rejects_max_timescale_at_most_two(bad: float) -> None:
    with pytest.raises(ValueError, match=rf"max_timescale.*{bad}"):
        cells.make("chrono_lstm", I, H, max_timescale=bad)


def test_chrono_lstm_step_matches_equations() -> None:
    cell = ChronoLSTMCell(I, H, max_timescale=20.0)
    randomize_(cell)
    x, h, c = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    out, state = cell(x, LSTMState(h, c))
    h_ref, c_ref = lstm_cell_step(cell, x, h, c)
    assert_close(out, h_ref)
    assert_close(state.c, c_ref)


@pytest.mark.parametrize("fused", [False, True])
def test_chrono_lstm_layer_equals_stepping_the_cell(fused: bool) -> None:
    layer = cells.make("chrono_lstm", I, H, max_timescale=20.0, fused=fused)
    assert layer.runs_on_torch_lstm is fused
    x = torch.randn(B, T, I)
    h0, c0 = torch.randn(1, B, H), torch.randn(1, B, H)
    outputs, final = layer(x, LSTMState(h0, c0))
    cell, state, expected = layer.cells[0], LSTMState(h0[0], c0[0]), []
    for t in range(T):
        h, state = cell(x[:, t], state)
        expected.append(h)
    assert_close(outputs, torch.stack(expected, 1))
    assert_close(final.h[0], state.h)
    assert_close(final.c[0], state.c)


def test_chrono_lstm_equals_torch_lstm() -> None:
    layer = cells.make("chrono_lstm", I, H, num_layers=2, max_timescale=20.0)
    module = cells.to_torch_lstm(layer)
    x = torch.randn(B, T, I)
    expected, (h_ref, c_ref) = module(x)
    outputs, final = layer(x)
    assert_close(outputs, expected)
    assert_close(final.h, h_ref)
    assert_close(final.c, c_ref)


def test_chrono_lstm_gradcheck() -> None:
    cell = ChronoLSTMCell(3, 4, max_timescale=10.0).double()
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    h0, c0 = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)

    def run(module, x, h, c):
        state = LSTMState(h, c)
        for t in range(x.shape[1]):
            _, state = module(x[:, t], state)
        return state.h, state.c

    assert gradcheck_cell(cell, run, [x, h0, c0])


@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (3, True)])
def test_chrono_initialize_works_on_torch_lstm(num_layers: int, bidirectional: bool) -> None:
    module = nn.LSTM(I, 32, num_layers=num_layers, bidirectional=bidirectional)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    assert cells.chrono_initialize_(module, 30.0) is module
    suffixes = ["", "_reverse"] if bidirectional else [""]
    for layer in range(num_layers):
        for suffix in suffixes:
            name = f"l{layer}{suffix}"
            bias_ih, bias_hh = getattr(module, f"bias_ih_{name}"), getattr(module, f"bias_hh_{name}")
            b_i, b_f, b_g, b_o = _effective_biases(bias_ih, bias_hh, 32)
            _assert_chrono(b_i, b_f, 30.0)
            assert float(b_f.std()) > 0.1
            # The cell and output gates start at 0, as in the original code; the weights are left alone.
            assert torch.equal(b_g, torch.zeros(32)) and torch.equal(b_o, torch.zeros(32))
            assert torch.equal(getattr(module, f"weight_ih_{name}"), before[f"weight_ih_{name}"])
            assert torch.equal(getattr(module, f"weight_hh_{name}"), before[f"weight_hh_{name}"])
    # The initialised module still runs.
    out, _ = module(torch.randn(T, B, I))
    assert bool(torch.isfinite(out).all())


def test_chrono_initialize_works_on_torch_lstm_cell_and_layers() -> None:
    lstm_cell = cells.chrono_initialize_(nn.LSTMCell(I, 16), 10.0)
    b_i, b_f, _, _ = _effective_biases(lstm_cell.bias_ih, lstm_cell.bias_hh, 16)
    _assert_chrono(b_i, b_f, 10.0)
    # Nested: a model holding a stack of rnnzoo LSTM cells.
    model = nn.Sequential(cells.make("lstm", I, 16, num_layers=2))
    cells.chrono_initialize_(model, 10.0)
    for cell in model[0].cells:
        b_i, b_f, _, _ = _effective_biases(cell.bias_ih, cell.bias_hh, 16)
        _assert_chrono(b_i, b_f, 10.0)


def test_chrono_initialize_rejects_module_without_gated_cell() -> None:
    with pytest.raises(ValueError, match="Linear"):
        cells.chrono_initialize_(nn.Linear(3, 4), 10.0)
    with pytest.raises(ValueError, match="no gated cell"):
        cells.chrono_initialize_(nn.Sequential(nn.Linear(3, 4), nn.GRU(4, 4)), 10.0)


def test_chrono_forget_bias_range_and_generator() -> None:
    values = cells.chrono_forget_bias(10_000, 50.0)
    assert values.shape == (10_000,)
    assert float(values.min()) >= 0.0
    assert float(values.max()) <= math.log(49.0)
    # exp(b_f) is uniform on [1, T-1]: its mean is T/2.
    assert abs(float(values.exp().mean()) - 25.0) < 1.0
    first = cells.chrono_forget_bias(8, 50.0, generator=torch.Generator().manual_seed(3))
    second = cells.chrono_forget_bias(8, 50.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


def test_chrono_lstm_rejects_bad_inputs() -> None:
    layer = cells.make("chrono_lstm", I, H, max_timescale=10.0)
    with pytest.raises(ValueError, match=r"7 features.*input_size=3"):
        layer(torch.randn(B, T, 7))
    with pytest.raises(ValueError, match=r"3-D.*\(5, 3\)"):
        layer(torch.randn(T, I))
    with pytest.raises(ValueError, match="hidden_size.*-1"):
        cells.make("chrono_lstm", I, -1, max_timescale=10.0)
    with pytest.raises(ValueError, match="input_size.*0"):
        cells.make("chrono_lstm", 0, H, max_timescale=10.0)
