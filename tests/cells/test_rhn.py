"""Recurrent Highway Networks (Zilly et al. 2017): deep highway transitions in every step."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rnnzoo import cells
from rnnzoo.cells.rhn import RHNCell, RHNState
from tests.cells.references import affine, gradcheck_cell, randomize_, rhn_step, sigmoid

B, T, I, H = 2, 5, 3, 4


def test_rhn_depth_one_step_matches_equations() -> None:
    cell = randomize_(RHNCell(I, H, depth=1))
    x, s = torch.randn(B, I), torch.randn(B, H)
    out, state = cell(x, RHNState(s))
    with torch.no_grad():
        w_h, w_t = cell.weight_ih[:H], cell.weight_ih[H:]
        r_h, r_t = cell.weight_hh[0, :H], cell.weight_hh[0, H:]
        b_h, b_t = cell.bias[0, :H], cell.bias[0, H:]
        h = torch.tanh(x @ w_h.t() + s @ r_h.t() + b_h)
        t = sigmoid(x @ w_t.t() + s @ r_t.t() + b_t)
        expected = h * t + s * (1.0 - t)
    assert_close(out, expected)
    assert_close(state.s, expected)


@pytest.mark.parametrize("depth", [2, 3])
def test_rhn_deep_step_matches_loop_reference(depth: int) -> None:
    cell = randomize_(RHNCell(I, H, depth=depth))
    x, s = torch.randn(B, I), torch.randn(B, H)
    out, state = cell(x, RHNState(s))
    with torch.no_grad():
        expected = rhn_step(cell, x, s)
        # The input enters the first micro-layer only: a reference feeding it to every
        # micro-layer gives something else.
        wrong = s
        for layer in range(depth):
            pre = affine(x, cell.weight_ih) + affine(wrong, cell.weight_hh[layer], cell.bias[layer])
            transform = sigmoid(pre[:, H:])
            wrong = torch.tanh(pre[:, :H]) * transform + wrong * (1 - transform)
    assert_close(out, expected)
    assert_close(state.s, expected)
    assert (expected - wrong).abs().max() > 1e-3


def test_rhn_init_transform_bias() -> None:
    cell = RHNCell(I, H, depth=3)
    assert cell.bias.shape == (3, 2 * H)
    assert torch.equal(cell.bias.detach()[:, H:], torch.full((3, H), -2.0))
    assert torch.equal(cell.bias.detach()[:, :H], torch.zeros(3, H))
    custom = cells.make("rhn", I, H, depth=2, transform_bias=-1.5)
    assert torch.equal(custom.cells[0].bias.detach()[:, H:], torch.full((2, H), -1.5))
    bound = 1.0 / math.sqrt(H)
    assert float(cell.weight_hh.detach().abs().max()) <= bound and float(cell.weight_hh.detach().std()) > 0.1 * bound


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("depth", [1, 3])
def test_rhn_layer_equals_stepping_the_cell(fused: bool, depth: int) -> None:
    layer = cells.make("rhn", I, H, depth=depth, fused=fused)
    randomize_(layer)
    x, s0 = torch.randn(B, T, I), torch.randn(1, B, H)
    outputs, final = layer(x, RHNState(s0))
    cell, state, expected, reference = layer.cells[0], RHNState(s0[0]), [], []
    s_ref = s0[0]
    for t in range(T):
        h, state = cell(x[:, t], state)
        expected.append(h)
        with torch.no_grad():
            s_ref = rhn_step(cell, x[:, t], s_ref)
        reference.append(s_ref)
    assert_close(outputs, torch.stack(expected, 1))
    assert_close(outputs, torch.stack(reference, 1))
    assert_close(final.s[0], state.s)


def test_rhn_gradcheck() -> None:
    cell = RHNCell(3, 4, depth=2).double()
    randomize_(cell)
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    s0 = torch.randn(2, 4, dtype=torch.float64)

    def run(module, x, s):
        state, outs = RHNState(s), []
        for t in range(x.shape[1]):
            out, state = module(x[:, t], state)
            outs.append(out)
        return torch.stack(outs, 1)

    assert gradcheck_cell(cell, run, [x, s0])


def _identity_rhn(size: int, input_dropout: float, state_dropout: float, input_gain: float, recurrent: bool):
    """A depth-1 RHN layer with t = 1 (s' = tanh(W_H x + R_H s)), W_H = gain·I and R_H = I or 0."""
    layer = cells.make("rhn", size, size, depth=1, input_dropout=input_dropout, state_dropout=state_dropout)
    cell = layer.cells[0]
    with torch.no_grad():
        cell.weight_ih.zero_()
        cell.weight_ih[:size] = input_gain * torch.eye(size)
        cell.weight_hh.zero_()
        if recurrent:
            cell.weight_hh[0, :size] = torch.eye(size)
        cell.bias.zero_()
        cell.bias[0, size:] = 50.0  # σ(50) == 1 in float32: the transform gate is fully open
    return layer


def test_rhn_input_mask_is_shared_across_steps_and_fresh_per_sequence() -> None:
    size, batch, steps = 16, 8, 6
    layer = _identity_rhn(size, input_dropout=0.5, state_dropout=0.0, input_gain=1.0, recurrent=False).train()
    x = torch.ones(batch, steps, size)
    outputs, _ = layer(x)  # s_t = tanh(m ⊙ 1) per step: 0 where dropped, tanh(2) where kept
    kept = outputs[:, 0] != 0
    assert_close(outputs[:, 0], torch.where(kept, torch.tanh(torch.tensor(2.0)), torch.tensor(0.0)))
    for t in range(1, steps):
        assert torch.equal(outputs[:, t], outputs[:, 0]), f"input mask changed at step {t}"
    assert 0.2 < float(kept.float().mean()) < 0.8
    # Each sequence in the batch has its own mask.
    assert len({tuple(row.tolist()) for row in kept}) == batch
    # A second call draws new masks.
    again, _ = layer(x)
    assert not torch.equal(again[:, 0] != 0, kept)
    for t in range(1, steps):
        assert torch.equal(again[:, t], again[:, 0])
    # Eval: no masks, no scaling.
    layer.eval()
    assert layer.cells[0].draw_masks(batch, x.device, x.dtype) == ()
    evaluated, _ = layer(x)
    assert_close(evaluated, torch.full_like(evaluated, math.tanh(1.0)))


def test_rhn_state_mask_is_shared_across_steps() -> None:
    size, batch, steps = 16, 8, 6
    layer = _identity_rhn(size, input_dropout=0.0, state_dropout=0.5, input_gain=3.0, recurrent=True).train()
    x = torch.zeros(batch, steps, size)
    x[:, 0] = 1.0  # s_0 = tanh(3); afterwards s_t = tanh(m ⊙ s_{t-1}), m in {0, 2}
    outputs, _ = layer(x)
    assert_close(outputs[:, 0], torch.full((batch, size), math.tanh(3.0)))
    mask = (outputs[:, 1] != 0).float() * 2.0
    assert 0.2 < float((mask > 0).float().mean()) < 0.8
    expected = outputs[:, 0]
    for t in range(1, steps):
        expected = torch.tanh(mask * expected)
        assert_close(outputs[:, t], expected, msg=f"state mask changed at step {t}")
    assert len({tuple(row.tolist()) for row in mask}) == batch
    again, _ = layer(x)
    assert not torch.equal(again[:, 1] != 0, mask > 0)


def _masked_rhn_step(cell: RHNCell, x: torch.Tensor, s: torch.Tensor, input_mask: torch.Tensor, state_mask: torch.Tensor) -> torch.Tensor:
    """Gal & Ghahramani's variational dropout in the RHN: the masked state feeds every micro-layer's
    weights, the carry uses the unmasked state."""
    x = x * input_mask
    for layer in range(cell.depth):
        pre = affine(s * state_mask, cell.weight_hh[layer], cell.bias[layer])
        if layer == 0:
            pre = pre + affine(x, cell.weight_ih)
        transform = sigmoid(pre[:, H:])
        s = torch.tanh(pre[:, :H]) * transform + s * (1.0 - transform)
    return s


def test_rhn_masks_are_shared_by_every_step_and_micro_layer() -> None:
    layer = cells.make("rhn", I, H, depth=3, input_dropout=0.4, state_dropout=0.3).train()
    randomize_(layer)
    cell = layer.cells[0]
    x = torch.randn(B, T, I)
    torch.manual_seed(7)
    input_mask, state_mask = cell.draw_masks(B, x.device, x.dtype)
    assert input_mask.shape == (B, I) and state_mask.shape == (B, H)
    for mask, keep in ((input_mask, 0.6), (state_mask, 0.7)):
        assert bool(((mask == 0) | torch.isclose(mask, torch.tensor(1.0 / keep))).all())  # inverted dropout
        assert bool((mask == 0).any()) and bool((mask != 0).any())  # the draw drops something
    torch.manual_seed(7)
    outputs, _ = layer(x)  # draws the same masks first thing
    s, expected = torch.zeros(B, H), []
    with torch.no_grad():
        for t in range(T):
            s = _masked_rhn_step(cell, x[:, t], s, input_mask, state_mask)
            expected.append(s)
    assert_close(outputs, torch.stack(expected, 1))
    # project_input applies the input mask to every step.
    with torch.no_grad():
        projected = cell.project_input(x, (input_mask, state_mask))
        assert_close(projected, (x * input_mask[:, None]) @ cell.weight_ih.t())


def test_rhn_eval_ignores_dropout() -> None:
    layer = cells.make("rhn", I, H, depth=2, input_dropout=0.5, state_dropout=0.5)
    plain = cells.make("rhn", I, H, depth=2)
    plain.load_state_dict(layer.state_dict())
    layer.eval()
    x = torch.randn(B, T, I)
    first, _ = layer(x)
    second, _ = layer(x)
    assert torch.equal(first, second)
    assert_close(first, plain(x)[0])
    layer.train()
    assert (layer(x)[0] - first).abs().max() > 1e-4  # training does drop


def test_rhn_rejects_bad_inputs() -> None:
    layer = cells.make("rhn", I, H)
    with pytest.raises(ValueError, match=r"8 features.*input_size=3"):
        layer(torch.randn(B, T, 8))
    with pytest.raises(ValueError, match=r"3-D.*\(2, 5, 3, 1\)"):
        layer(torch.randn(B, T, I, 1))
    with pytest.raises(ValueError, match=r"\(batch, 3\).*\(2, 8\)"):
        layer.cells[0](torch.randn(B, 8))
    with pytest.raises(ValueError, match="hidden_size.*-1"):
        cells.make("rhn", I, -1)
    with pytest.raises(ValueError, match="input_size.*0"):
        cells.make("rhn", 0, H)
    with pytest.raises(ValueError, match="depth.*0"):
        cells.make("rhn", I, H, depth=0)
    with pytest.raises(ValueError, match="input_dropout.*1"):
        cells.make("rhn", I, H, input_dropout=1.0)
    with pytest.raises(ValueError, match="state_dropout.*-0.1"):
        cells.make("rhn", I, H, state_dropout=-0.1)
