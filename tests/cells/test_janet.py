"""JANET (van der Westhuizen & Lasenby 2018): the forget-gate-only LSTM."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rnnzoo import cells
from rnnzoo.cells.janet import JANETCell, JANETState
from tests.cells.references import gradcheck_cell, janet_original_step, janet_step, randomize_

B, T, I, H = 2, 5, 3, 4


@pytest.mark.parametrize("shift", [1.0, 0.0, -0.7, 2.5])
def test_janet_step_matches_equations(shift: float) -> None:
    cell = randomize_(JANETCell(I, H, shift=shift))
    x, c = torch.randn(B, I), torch.randn(B, H)
    out, state = cell(x, JANETState(c))
    expected = janet_step(cell, x, c, shift)
    assert_close(state.c, expected)
    assert_close(out, expected)  # h_t = c_t


def test_janet_shift_zero_is_the_original_form() -> None:
    cell = randomize_(JANETCell(I, H, shift=0.0))
    x, c = torch.randn(B, I), torch.randn(B, H)
    out, _ = cell(x, JANETState(c))
    assert_close(out, janet_original_step(cell, x, c))


def test_janet_default_shift_is_one_and_matters() -> None:
    cell = randomize_(JANETCell(I, H))
    assert cell.shift == 1.0
    unshifted = JANETCell(I, H, shift=0.0)
    unshifted.load_state_dict(cell.state_dict())
    x, c = torch.randn(B, I), torch.randn(B, H)
    shifted_out, _ = cell(x, JANETState(c))
    plain_out, _ = unshifted(x, JANETState(c))
    assert_close(shifted_out, janet_step(cell, x, c, 1.0))
    assert (shifted_out - plain_out).abs().max() > 1e-3
    # With the shift removed, the same weights give the original coupled form.
    assert_close(plain_out, janet_original_step(cell, x, c))


def test_janet_default_shift_through_make() -> None:
    layer = cells.make("janet", I, H)
    assert all(cell.shift == 1.0 for cell in layer.cells)
    assert cells.make("janet", I, H, shift=0.0).cells[0].shift == 0.0


@pytest.mark.parametrize("max_timescale", [None, 10.0, 784.0])
def test_janet_forget_bias_is_chrono(max_timescale: float | None) -> None:
    hidden = 256
    options = {} if max_timescale is None else {"max_timescale": max_timescale}
    cell = JANETCell(I, hidden, **options)
    top = math.log((100.0 if max_timescale is None else max_timescale) - 1.0)
    forget, candidate = cell.bias.detach()[:hidden], cell.bias.detach()[hidden:]
    assert bool((forget >= 0.0).all())
    assert bool((forget <= top + 1e-6).all())
    assert forget.unique().numel() > hidden // 2  # spread, one draw a unit
    assert float(forget.max()) > 0.8 * top
    assert torch.equal(candidate, torch.zeros(hidden))


def test_janet_rejects_bad_max_timescale() -> None:
    with pytest.raises(ValueError, match="max_timescale.*1.5"):
        JANETCell(I, H, max_timescale=1.5)


@pytest.mark.parametrize("fused", [False, True])
def test_janet_layer_equals_stepping_the_cell(fused: bool) -> None:
    layer = cells.make("janet", I, H, fused=fused)
    randomize_(layer)
    x, c0 = torch.randn(B, T, I), torch.randn(1, B, H)
    outputs, final = layer(x, JANETState(c0))
    cell, state, expected = layer.cells[0], JANETState(c0[0]), []
    for t in range(T):
        h, state = cell(x[:, t], state)
        expected.append(h)
    assert_close(outputs, torch.stack(expected, 1))
    assert_close(final.c[0], state.c)


def test_janet_layer_matches_reference_over_a_sequence() -> None:
    layer = cells.make("janet", I, H, num_layers=2, shift=0.5)
    randomize_(layer)
    x = torch.randn(B, T, I)
    outputs, final = layer(x)
    sequence = x
    for cell in layer.cells:
        c = torch.zeros(B, H)
        steps = []
        for t in range(T):
            c = janet_step(cell, sequence[:, t], c, 0.5)
            steps.append(c)
        sequence = torch.stack(steps, 1)
    assert_close(outputs, sequence)
    assert_close(final.c[1], sequence[:, -1])


def test_janet_gradcheck() -> None:
    cell = JANETCell(3, 4).double()
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    c0 = torch.randn(2, 4, dtype=torch.float64)

    def run(module, x, c):
        state, outs = JANETState(c), []
        for t in range(x.shape[1]):
            out, state = module(x[:, t], state)
            outs.append(out)
        return torch.stack(outs, 1)

    assert gradcheck_cell(cell, run, [x, c0])


def test_janet_rejects_bad_inputs() -> None:
    layer = cells.make("janet", I, H)
    with pytest.raises(ValueError, match=r"4 features.*input_size=3"):
        layer(torch.randn(B, T, 4))
    with pytest.raises(ValueError, match=r"3-D.*\(2, 5\)"):
        layer(torch.randn(B, T))
    with pytest.raises(ValueError, match=r"\(batch, 3\).*\(2, 4\)"):
        layer.cells[0](torch.randn(B, 4))
    with pytest.raises(ValueError, match="hidden_size.*-1"):
        cells.make("janet", I, -1)
    with pytest.raises(ValueError, match="input_size.*0"):
        cells.make("janet", 0, H)
    with pytest.raises(ValueError, match="(?i)shift.*nan"):
        JANETCell(I, H, shift=float("nan"))
    with pytest.raises(ValueError, match="takes no timestamps"):
        layer(torch.randn(B, T, I), times=torch.zeros(B, T))
