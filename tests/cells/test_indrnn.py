"""IndRNN (Li et al. 2018): h = act(W x + u ⊙ h + b), with |u| bounded during training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

from rnnzoo import cells
from rnnzoo.cells.indrnn import IndRNNCell, IndRNNState
from tests.cells.references import gradcheck_cell, indrnn_step, randomize_

B, T, I, H = 2, 5, 3, 4

# The authors' default bound on |u| for T steps (MAG = 2), per activation: adding/adding.py of
# github.com/Sunnydreamrain/IndRNN_Theano_Lasagne, U_bound.
AUTHORS_BOUND = {
    "relu": lambda steps: 2.0 ** (1.0 / steps),
    "tanh": lambda steps: (2.0 / 0.9 ** (steps / 10.0)) ** (1.0 / steps),
}


def _reference_sequence(x: torch.Tensor, h: torch.Tensor, cell: IndRNNCell, u: torch.Tensor) -> torch.Tensor:
    outs = []
    for t in range(x.shape[1]):
        h = indrnn_step(x[:, t], h, cell.weight_ih, u, cell.bias, cell.activation)
        outs.append(h)
    return torch.stack(outs, 1)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_indrnn_step_matches_equations(activation: str) -> None:
    cell = randomize_(IndRNNCell(I, H, activation=activation)).eval()
    x, h = torch.randn(B, I), torch.randn(B, H)
    out, state = cell(x, IndRNNState(h))
    expected = indrnn_step(x, h, cell.weight_ih, cell.recurrent_weight, cell.bias, activation)
    assert_close(out, expected)
    assert_close(state.h, expected)
    if activation == "relu":
        assert bool((out >= 0).all()) and bool((out == 0).any()) and bool((out > 0).any())
    else:
        assert bool((out < 0).any())  # tanh, not relu


def test_indrnn_default_bound_from_sequence_length() -> None:
    assert IndRNNCell(I, H, sequence_length=10).recurrent_max_abs == pytest.approx(2.0 ** (1.0 / 10))
    assert IndRNNCell(I, H, sequence_length=784).recurrent_max_abs == pytest.approx(2.0 ** (1.0 / 784))
    assert IndRNNCell(I, H).recurrent_max_abs is None
    assert IndRNNCell(I, H, sequence_length=10, recurrent_max_abs=0.5).recurrent_max_abs == 0.5
    layer = cells.make("indrnn", I, H, num_layers=2, sequence_length=20)
    assert all(cell.recurrent_max_abs == pytest.approx(2.0 ** (1.0 / 20)) for cell in layer.cells)


@pytest.mark.parametrize("sequence_length", [1, 10, 100, 784, 5000])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_indrnn_default_bound_follows_the_activation(activation: str, sequence_length: int) -> None:
    expected = AUTHORS_BOUND[activation](sequence_length)
    cell = IndRNNCell(I, H, activation=activation, sequence_length=sequence_length)
    assert cell.recurrent_max_abs == pytest.approx(expected, rel=1e-12)
    layer = cells.make("indrnn", I, H, num_layers=2, activation=activation, sequence_length=sequence_length)
    assert all(c.recurrent_max_abs == pytest.approx(expected, rel=1e-12) for c in layer.cells)
    # An explicit bound overrides the default, whatever the activation.
    explicit = IndRNNCell(I, H, activation=activation, sequence_length=sequence_length, recurrent_max_abs=0.5)
    assert explicit.recurrent_max_abs == 0.5
    assert IndRNNCell(I, H, activation=activation).recurrent_max_abs is None


@pytest.mark.parametrize("sequence_length", [None, 5, 100])
def test_indrnn_recurrent_weight_init_uniform_zero_to_bound(sequence_length: int | None) -> None:
    cell = IndRNNCell(I, 512, sequence_length=sequence_length)
    u = cell.recurrent_weight.detach()
    top = 1.0 if sequence_length is None else 2.0 ** (1.0 / sequence_length)
    assert float(u.min()) >= 0.0
    assert float(u.max()) <= top
    assert float(u.min()) < 0.05 * top and float(u.max()) > 0.95 * top  # covers the whole range
    assert abs(float(u.mean()) - top / 2) < 0.1 * top
    assert torch.equal(cell.bias.detach(), torch.zeros(512))


def test_indrnn_last_layer_init_applies_to_last_layer_only() -> None:
    steps = 10
    low, top = 0.5 ** (1.0 / steps), 2.0 ** (1.0 / steps)
    layer = cells.make("indrnn", I, 64, num_layers=3, sequence_length=steps, last_layer_init=True)
    assert len(layer.cells) == 3
    last = layer.cells[2].recurrent_weight.detach()
    assert float(last.min()) >= low and float(last.max()) <= top
    for cell in layer.cells[:2]:
        u = cell.recurrent_weight.detach()
        assert float(u.min()) >= 0.0 and float(u.max()) <= top
        assert float(u.min()) < 0.3  # lower bound 0, not (1/2)**(1/T)
    # Without the option every layer starts at 0.
    plain = cells.make("indrnn", I, 64, num_layers=3, sequence_length=steps)
    assert float(plain.cells[2].recurrent_weight.detach().min()) < 0.3


def test_indrnn_last_layer_init_single_cell_and_needs_sequence_length() -> None:
    cell = IndRNNCell(I, 64, sequence_length=4, last_layer_init=True)
    assert float(cell.recurrent_weight.detach().min()) >= 0.5 ** 0.25
    with pytest.raises(ValueError, match="sequence_length"):
        IndRNNCell(I, H, last_layer_init=True)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_indrnn_training_forward_clips_recurrent_weight_after_optimizer_step(activation: str) -> None:
    steps = 8
    bound = AUTHORS_BOUND[activation](steps)
    layer = cells.make("indrnn", I, H, activation=activation, sequence_length=steps)
    randomize_(layer, scale=1.0)
    cell = layer.cells[0]
    with torch.no_grad():
        cell.recurrent_weight.copy_(torch.tensor([0.5, 0.9, -0.3, 1.0]))
    optimizer = torch.optim.SGD([cell.recurrent_weight], lr=1.0)
    cell.recurrent_weight.grad = torch.tensor([-5.0, 5.0, 0.0, 0.0])  # u -= lr * grad
    optimizer.step()
    pushed = cell.recurrent_weight.detach().clone()
    assert_close(pushed, torch.tensor([5.5, -4.1, -0.3, 1.0]))

    x = torch.randn(B, steps, I).abs()  # mostly active relu units, so u shows in the output
    layer.train()
    outputs, _ = layer(x)
    clipped = torch.tensor([bound, -bound, -0.3, 1.0])
    # The bound as the parameter's dtype holds it (float32 may round it up by one ulp).
    assert bool((cell.recurrent_weight.detach().abs() <= torch.tensor(bound, dtype=torch.float32)).all())
    assert_close(cell.recurrent_weight.detach(), clipped)
    with torch.no_grad():
        expected = _reference_sequence(x, torch.zeros(B, H), cell, clipped)
        unclipped = _reference_sequence(x, torch.zeros(B, H), cell, pushed)
    assert_close(outputs, expected)
    assert (unclipped - expected).abs().max() > 1e-2  # the clip is visible in the output


def test_indrnn_cell_training_step_clips_too() -> None:
    cell = IndRNNCell(I, H, recurrent_max_abs=0.5)
    with torch.no_grad():
        cell.recurrent_weight.copy_(torch.tensor([2.0, -2.0, 0.1, 0.4]))
    x, h = torch.randn(B, I), torch.randn(B, H)
    out, _ = cell(x, IndRNNState(h))
    assert_close(cell.recurrent_weight.detach(), torch.tensor([0.5, -0.5, 0.1, 0.4]))
    with torch.no_grad():
        assert_close(out, indrnn_step(x, h, cell.weight_ih, torch.tensor([0.5, -0.5, 0.1, 0.4]), cell.bias))


def test_indrnn_compiled_training_forward_enforces_the_bound() -> None:
    """torch.compile(fullgraph=True) of a training forward with a bound set: no graph break (the
    clamp is unconditional under compile, not a data-dependent branch), and the bound holds."""
    torch._dynamo.reset()
    steps = 6
    bound = AUTHORS_BOUND["tanh"](steps)
    eager = cells.make("indrnn", I, H, activation="tanh", sequence_length=steps).train()
    with torch.no_grad():
        eager.cells[0].recurrent_weight.copy_(torch.tensor([3.0, -3.0, 0.2, 0.7]))  # as after a big step
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True)
    x = torch.randn(B, steps, I)
    expected, _ = eager(x)
    actual, _ = compiled(x)
    clipped = torch.tensor([bound, -bound, 0.2, 0.7])
    assert_close(compiled_module.cells[0].recurrent_weight.detach(), clipped)
    assert_close(eager.cells[0].recurrent_weight.detach(), clipped)
    assert_close(actual, expected, atol=1e-5, rtol=1e-4)
    torch._dynamo.reset()


def test_indrnn_eval_forward_does_not_clip() -> None:
    """Documented behaviour: the bound is enforced before *training* forwards only; in eval
    mode the weights are used as they are (a model is evaluated as it was trained)."""
    layer = cells.make("indrnn", I, H, sequence_length=8)
    cell = layer.cells[0]
    with torch.no_grad():
        cell.recurrent_weight.copy_(torch.tensor([3.0, -3.0, 0.2, 0.7]))
    layer.eval()
    x = torch.randn(B, 8, I)
    outputs, _ = layer(x)
    assert torch.equal(cell.recurrent_weight.detach(), torch.tensor([3.0, -3.0, 0.2, 0.7]))
    with torch.no_grad():
        assert_close(outputs, _reference_sequence(x, torch.zeros(B, H), cell, cell.recurrent_weight))


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_indrnn_layer_equals_stepping_the_cell(fused: bool, activation: str) -> None:
    layer = cells.make("indrnn", I, H, activation=activation, sequence_length=T, fused=fused)
    x, h0 = torch.randn(B, T, I), torch.randn(1, B, H).abs()
    outputs, final = layer(x, IndRNNState(h0))
    cell, state, expected = layer.cells[0], IndRNNState(h0[0]), []
    for t in range(T):
        h, state = cell(x[:, t], state)
        expected.append(h)
    assert_close(outputs, torch.stack(expected, 1))
    assert_close(final.h[0], state.h)
    with torch.no_grad():
        assert_close(outputs, _reference_sequence(x, h0[0], cell, cell.recurrent_weight))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_indrnn_gradcheck(activation: str) -> None:
    cell = IndRNNCell(3, 4, activation=activation).double().eval()
    with torch.no_grad():
        cell.bias.normal_()
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    h0 = torch.rand(2, 4, dtype=torch.float64)

    def run(module, x, h):
        state, outs = IndRNNState(h), []
        for t in range(x.shape[1]):
            out, state = module(x[:, t], state)
            outs.append(out)
        return torch.stack(outs, 1)

    assert gradcheck_cell(cell, run, [x, h0])


def test_indrnn_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="activation.*'sigmoid'"):
        IndRNNCell(I, H, activation="sigmoid")
    with pytest.raises(ValueError, match="activation.*'gelu'"):
        cells.make("indrnn", I, H, activation="gelu")
    with pytest.raises(ValueError, match="sequence_length.*0"):
        IndRNNCell(I, H, sequence_length=0)
    with pytest.raises(ValueError, match="recurrent_max_abs.*-1"):
        IndRNNCell(I, H, recurrent_max_abs=-1.0)


def test_indrnn_rejects_bad_inputs() -> None:
    layer = cells.make("indrnn", I, H)
    with pytest.raises(ValueError, match=r"6 features.*input_size=3"):
        layer(torch.randn(B, T, 6))
    with pytest.raises(ValueError, match=r"3-D.*\(3,\)"):
        layer(torch.randn(I))
    with pytest.raises(ValueError, match=r"\(batch, 3\).*\(2, 6\)"):
        layer.cells[0](torch.randn(B, 6))
    with pytest.raises(ValueError, match="hidden_size.*-1"):
        cells.make("indrnn", I, -1)
    with pytest.raises(ValueError, match="input_size.*0"):
        cells.make("indrnn", 0, H)
