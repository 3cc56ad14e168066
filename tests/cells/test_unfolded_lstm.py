"""The unfolded LSTM: an LSTM run for L steps read as an L-layer feed-forward network over one vector."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from rnnzoo import cells
from rnnzoo.cells.unfolded_lstm import UnfoldedLSTM
from tests.cells.references import gradcheck_cell, randomize_, sigmoid

B, I, H = 6, 3, 4


def _batch_norm_reference(z: torch.Tensor, norm: nn.Module, training: bool) -> torch.Tensor:
    if isinstance(norm, nn.Identity):
        return z
    if training:
        mean, var = z.mean(0), z.var(0, unbiased=False)
    else:
        mean, var = norm.running_mean, norm.running_var
    return (z - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def unfolded_reference(model: UnfoldedLSTM, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z_1 = W x + b_1, z_l = U_l h_{l-1} + b_l; LSTM update from h_0 = c_0 = 0; no dropout."""
    h = torch.zeros(x.shape[0], model.hidden_size, dtype=x.dtype)
    c = torch.zeros_like(h)
    for index, layer in enumerate(model.layers):
        layer_input = x if index == 0 else h
        z = layer_input @ layer.linear.weight.t() + layer.linear.bias
        z = _batch_norm_reference(z, layer.gate_norm, model.training)
        i, f, g, o = (z[:, k * model.hidden_size : (k + 1) * model.hidden_size] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * torch.tanh(g)
        h = sigmoid(o) * torch.tanh(_batch_norm_reference(c, layer.cell_norm, model.training))
    return h, c


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_unfolded_lstm_has_exactly_depth_layers_each_called_once(depth: int) -> None:
    model = cells.make("unfolded_lstm", I, H, depth=depth)
    assert len(model.layers) == depth
    calls = [0] * depth
    for index, layer in enumerate(model.layers):
        layer.register_forward_hook(lambda module, args, output, index=index: calls.__setitem__(index, calls[index] + 1))
    out, _ = model(torch.randn(B, I))
    assert out.shape == (B, H)
    assert calls == [1] * depth


def test_unfolded_lstm_tied_shares_layers_two_to_last() -> None:
    depth = 4
    model = cells.make("unfolded_lstm", H, H, depth=depth, tied=True)  # input_size == hidden_size: same shapes
    assert len(model.layers) == depth
    shared = model.layers[1].linear
    for layer in model.layers[2:]:
        assert layer.linear is shared
        assert layer.linear.weight is shared.weight and layer.linear.bias is shared.bias
    first = model.layers[0].linear
    assert first.weight is not shared.weight and first.bias is not shared.bias
    assert not torch.equal(first.weight, shared.weight)
    # Batch-norm statistics stay per layer even when tied (here: identities, so check objects with BN on).
    tied_bn = cells.make("unfolded_lstm", H, H, depth=depth, tied=True, batch_norm=True)
    norms = [layer.gate_norm for layer in tied_bn.layers]
    assert len({id(norm) for norm in norms}) == depth
    # Parameters: one input map, one shared recurrent map.
    count = sum(p.numel() for p in model.parameters())
    assert count == 2 * (4 * H * H + 4 * H)
    # The shared linear runs once per tied layer.
    calls = []
    shared.register_forward_hook(lambda *args: calls.append(1))
    model(torch.randn(B, H))
    assert len(calls) == depth - 1


def test_unfolded_lstm_untied_by_default() -> None:
    depth = 4
    model = cells.make("unfolded_lstm", H, H, depth=depth)
    assert model.tied is False
    weights = [layer.linear.weight for layer in model.layers]
    assert len({id(w) for w in weights}) == depth
    for a in range(depth):
        for b in range(a + 1, depth):
            assert not torch.equal(weights[a], weights[b])
    assert sum(p.numel() for p in model.parameters()) == depth * (4 * H * H + 4 * H)


def test_unfolded_lstm_init_orthogonal_blocks_and_zero_bias() -> None:
    model = UnfoldedLSTM(8, 8, depth=3, batch_norm=True)
    for layer in model.layers:
        for block in layer.linear.weight.detach().chunk(4):
            assert_close(block @ block.t(), torch.eye(8), atol=1e-5, rtol=0)
        assert torch.equal(layer.linear.bias.detach(), torch.zeros(32))
        assert torch.equal(layer.gate_norm.weight.detach(), torch.full((32,), 0.1))
        assert torch.equal(layer.cell_norm.weight.detach(), torch.full((8,), 0.1))


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("depth", [1, 3])
def test_unfolded_lstm_matches_reference(tied: bool, depth: int) -> None:
    model = cells.make("unfolded_lstm", I, H, depth=depth, tied=tied)
    randomize_(model)
    x = torch.randn(B, I)
    out, state = model(x)
    with torch.no_grad():
        h_ref, c_ref = unfolded_reference(model, x)
    assert_close(out, h_ref)
    assert_close(state.h, h_ref)
    assert_close(state.c, c_ref)


def test_unfolded_lstm_batch_norm_train_and_eval() -> None:
    model = cells.make("unfolded_lstm", I, H, depth=3, batch_norm=True)
    randomize_(model)
    with torch.no_grad():
        for layer in model.layers:  # BN running stats start at (0, 1): make them non-trivial
            layer.gate_norm.running_mean.normal_()
            layer.gate_norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(B, I)
    model.train()
    with torch.no_grad():
        h_train_ref, _ = unfolded_reference(model, x)
    stats_before = model.layers[1].gate_norm.running_mean.clone()
    train_out, _ = model(x)
    assert_close(train_out, h_train_ref)
    assert not torch.equal(model.layers[1].gate_norm.running_mean, stats_before)  # training updates the stats
    model.eval()
    eval_out, _ = model(x)
    with torch.no_grad():
        h_eval_ref, _ = unfolded_reference(model, x)
    assert_close(eval_out, h_eval_ref)
    assert bool(torch.isfinite(eval_out).all())
    assert (eval_out - train_out).abs().max() > 1e-4
    # One vector also works in eval (running statistics).
    assert model(x[:1])[0].shape == (1, H)


def test_unfolded_lstm_dropout_applies_between_layers() -> None:
    depth, p = 3, 0.5
    model = cells.make("unfolded_lstm", I, 32, depth=depth, dropout=p).train()
    randomize_(model)
    inputs, outputs = {}, {}
    for index, layer in enumerate(model.layers):
        layer.register_forward_pre_hook(lambda module, args, index=index: inputs.__setitem__(index, args[0].detach()))
        layer.register_forward_hook(lambda module, args, out, index=index: outputs.__setitem__(index, out.h.detach()))
    x = torch.randn(B, I)
    first, _ = model(x)
    assert torch.equal(inputs[0], x)  # the input vector itself is not dropped
    for index in range(1, depth):
        previous, got = outputs[index - 1], inputs[index]
        dropped = got == 0
        assert bool(dropped.any()) and bool((~dropped).any())
        assert_close(got[~dropped], previous[~dropped] / (1 - p))
    second, _ = model(x)
    assert (first - second).abs().max() > 1e-4  # fresh masks each call
    model.eval()
    evaluated, _ = model(x)
    with torch.no_grad():
        assert_close(evaluated, unfolded_reference(model, x)[0])
    assert torch.equal(model(x)[0], evaluated)


@pytest.mark.parametrize("tied", [False, True])
def test_unfolded_lstm_gradcheck(tied: bool) -> None:
    model = UnfoldedLSTM(3, 4, depth=3, tied=tied).double()
    randomize_(model)
    x = torch.randn(2, 3, dtype=torch.float64)

    def run(module, x):
        out, state = module(x)
        return out, state.c

    assert gradcheck_cell(model, run, [x])


def test_unfolded_lstm_rejects_bad_inputs() -> None:
    model = cells.make("unfolded_lstm", I, H)
    with pytest.raises(ValueError, match=r"\(batch, 3\).*\(2, 5, 3\)"):
        model(torch.randn(2, 5, I))
    with pytest.raises(ValueError, match=r"\(batch, 3\).*\(2, 7\)"):
        model(torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        model(torch.randn(I))
    with pytest.raises(ValueError, match="hidden_size.*-1"):
        cells.make("unfolded_lstm", I, -1)
    with pytest.raises(ValueError, match="input_size.*0"):
        cells.make("unfolded_lstm", 0, H)
    with pytest.raises(ValueError, match="depth.*0"):
        cells.make("unfolded_lstm", I, H, depth=0)
    with pytest.raises(ValueError, match="dropout.*1"):
        cells.make("unfolded_lstm", I, H, dropout=1.0)
    with pytest.raises(ValueError, match="unknown option num_layers"):
        cells.make("unfolded_lstm", I, H, num_layers=2)
