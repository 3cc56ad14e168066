"""The reference LSTM cell: equations, layer vs hand-stepping, gradients, torch.nn.LSTM conversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from rnnzoo import cells
from rnnzoo.cells.lstm import LSTMCell, LSTMState
from tests.cells.references import gradcheck_cell, lstm_cell_step, randomize_

B, T, I, H = 2, 5, 3, 4


def test_lstm_step_matches_equations() -> None:
    cell = randomize_(LSTMCell(I, H))
    x, h, c = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    out, state = cell(x, LSTMState(h, c))
    h_ref, c_ref = lstm_cell_step(cell, x, h, c)
    assert_close(state.c, c_ref)
    assert_close(state.h, h_ref)
    assert_close(out, h_ref)


def test_lstm_step_from_no_state_starts_at_zero() -> None:
    cell = randomize_(LSTMCell(I, H))
    x = torch.randn(B, I)
    out, state = cell(x)
    h_ref, c_ref = lstm_cell_step(cell, x, torch.zeros(B, H), torch.zeros(B, H))
    assert_close(out, h_ref)
    assert_close(state.c, c_ref)


@pytest.mark.parametrize("fused", [False, True])
def test_lstm_layer_equals_stepping_the_cell(fused: bool) -> None:
    layer = cells.make("lstm", I, H, fused=fused)
    randomize_(layer)
    assert layer.runs_on_torch_lstm is fused
    x = torch.randn(B, T, I)
    h0, c0 = torch.randn(1, B, H), torch.randn(1, B, H)
    outputs, final = layer(x, LSTMState(h0, c0))
    cell = layer.cells[0]
    state = LSTMState(h0[0], c0[0])
    expected = []
    for t in range(T):
        h, state = cell(x[:, t], state)
        expected.append(h)
    assert_close(outputs, torch.stack(expected, dim=1))
    assert_close(final.h, state.h.unsqueeze(0))
    assert_close(final.c, state.c.unsqueeze(0))


@pytest.mark.parametrize("fused", [False, True])
def test_lstm_two_layer_stack_equals_stepping_each_cell(fused: bool) -> None:
    layer = cells.make("lstm", I, H, num_layers=2, fused=fused)
    x = torch.randn(B, T, I)
    outputs, final = layer(x)
    sequence = x
    finals = []
    for cell in layer.cells:
        state = cell.init_state(B)
        steps = []
        for t in range(T):
            h, state = cell(sequence[:, t], state)
            steps.append(h)
        sequence = torch.stack(steps, dim=1)
        finals.append(state)
    assert_close(outputs, sequence)
    assert_close(final.h, torch.stack([s.h for s in finals]))
    assert_close(final.c, torch.stack([s.c for s in finals]))


def test_lstm_gradcheck() -> None:
    cell = LSTMCell(3, 4).double()
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    h0, c0 = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)

    def run(module, x, h, c):
        state = LSTMState(h, c)
        outs = []
        for t in range(x.shape[1]):
            out, state = module(x[:, t], state)
            outs.append(out)
        return torch.stack(outs, 1), state.c

    assert gradcheck_cell(cell, run, [x, h0, c0])


@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, False), (1, True), (2, True)])
@pytest.mark.parametrize("fused", [False, True])
def test_lstm_to_torch_lstm_computes_the_same(num_layers: int, bidirectional: bool, fused: bool) -> None:
    layer = cells.make("lstm", I, H, num_layers=num_layers, bidirectional=bidirectional, fused=fused)
    randomize_(layer)
    module = cells.to_torch_lstm(layer)
    assert isinstance(module, nn.LSTM)
    assert (module.num_layers, module.bidirectional, module.batch_first) == (num_layers, bidirectional, True)
    directions = 2 if bidirectional else 1
    x = torch.randn(B, T, I)
    h0, c0 = torch.randn(num_layers * directions, B, H), torch.randn(num_layers * directions, B, H)
    expected, (h_ref, c_ref) = module(x, (h0, c0))
    outputs, final = layer(x, LSTMState(h0, c0))
    assert outputs.shape == (B, T, directions * H)
    assert_close(outputs, expected)
    assert_close(final.h, h_ref)
    assert_close(final.c, c_ref)


@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, False), (1, True), (2, True)])
@pytest.mark.parametrize("fused", [False, True])
def test_lstm_from_torch_lstm_computes_the_same(num_layers: int, bidirectional: bool, fused: bool) -> None:
    module = nn.LSTM(I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    layer = cells.from_torch_lstm(module)
    layer.fused = fused  # the conversion's layer runs fused; also hold the plain loop to nn.LSTM
    assert layer.runs_on_torch_lstm is fused
    directions = 2 if bidirectional else 1
    x = torch.randn(B, T, I)
    h0, c0 = torch.randn(num_layers * directions, B, H), torch.randn(num_layers * directions, B, H)
    expected, (h_ref, c_ref) = module(x, (h0, c0))
    outputs, final = layer(x, LSTMState(h0, c0))
    assert_close(outputs, expected)
    assert_close(final.h, h_ref)
    assert_close(final.c, c_ref)


def test_lstm_from_torch_lstm_time_major() -> None:
    module = nn.LSTM(I, H, num_layers=2, batch_first=False)
    layer = cells.from_torch_lstm(module)
    assert layer.batch_first is False
    x = torch.randn(T, B, I)
    expected, (h_ref, c_ref) = module(x)
    outputs, final = layer(x)
    assert_close(outputs, expected)
    assert_close(final.h, h_ref)
    assert_close(final.c, c_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lstm_conversion_copies_weights_exactly(dtype: torch.dtype) -> None:
    """The module's docstring promises an exact copy both ways, in the module's dtype."""
    module = nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True, dtype=dtype)
    layer = cells.from_torch_lstm(module)
    names = [f"l{layer_}{suffix}" for layer_ in range(2) for suffix in ("", "_reverse")]
    for name, cell in zip(names, layer.cells):
        for field in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            ours, theirs = getattr(cell, field), getattr(module, f"{field}_{name}")
            assert ours.dtype == dtype
            assert torch.equal(ours, theirs), f"{field}_{name} changed in from_torch_lstm ({dtype})"
    back = cells.to_torch_lstm(layer)
    for name, parameter in module.named_parameters():
        assert torch.equal(getattr(back, name), parameter), f"{name} changed in the round trip ({dtype})"


def test_lstm_to_torch_lstm_rejects_other_cells() -> None:
    with pytest.raises(ValueError, match="JANETCell"):
        cells.to_torch_lstm(cells.make("janet", I, H))
    with pytest.raises(ValueError, match="PhasedLSTMCell"):
        cells.to_torch_lstm(cells.make("phased_lstm", I, H))


def test_lstm_from_torch_lstm_rejects_projection_and_no_bias() -> None:
    with pytest.raises(ValueError, match="proj_size"):
        cells.from_torch_lstm(nn.LSTM(I, H, proj_size=2))
    with pytest.raises(ValueError, match="bias"):
        cells.from_torch_lstm(nn.LSTM(I, H, bias=False))


@pytest.mark.parametrize("fused", [False, True])
def test_lstm_layer_rejects_wrong_input_width(fused: bool) -> None:
    layer = cells.make("lstm", I, H, fused=fused)
    with pytest.raises(ValueError, match=r"5 features.*input_size=3"):
        layer(torch.randn(B, T, 5))


def test_lstm_layer_rejects_wrong_rank() -> None:
    layer = cells.make("lstm", I, H)
    with pytest.raises(ValueError, match=r"3-D.*\(2, 3\)"):
        layer(torch.randn(B, I))
    with pytest.raises(ValueError, match=r"\(1, 2, 5, 3\)"):
        layer(torch.randn(1, B, T, I))


def test_lstm_cell_rejects_wrong_step_input() -> None:
    cell = LSTMCell(I, H)
    with pytest.raises(ValueError, match=r"\(batch, 3\).*\(2, 5\)"):
        cell(torch.randn(B, 5))
    with pytest.raises(ValueError, match=r"\(2, 5, 3\)"):
        cell(torch.randn(B, T, I))


def test_lstm_rejects_nonpositive_sizes() -> None:
    with pytest.raises(ValueError, match="hidden_size.*-1"):
        cells.make("lstm", I, -1)
    with pytest.raises(ValueError, match="input_size.*0"):
        cells.make("lstm", 0, H)
    with pytest.raises(ValueError, match="hidden_size.*-1"):
        LSTMCell(I, -1)


def test_lstm_rejects_times() -> None:
    layer = cells.make("lstm", I, H)
    with pytest.raises(ValueError, match="takes no timestamps"):
        layer(torch.randn(B, T, I), times=torch.zeros(B, T))
