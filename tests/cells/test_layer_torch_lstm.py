"""RecurrentLayer's fused path: LSTM cells run on torch.nn.LSTM instead of the Python step loop.

The fused path must skip the loop yet agree with it (outputs, final state and every gradient) and
with torch.nn.LSTM itself given the same weights.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from rnnzoo import cells
from rnnzoo.cells.layer import RecurrentLayer
from tests.cells.layer_reference import (
    FUSED_CELLS,
    LENGTHS,
    SEQUENCE_CELLS,
    assert_nontrivial,
    assert_state_close,
    inputs,
    loss_weights,
    make,
    pad_with_garbage,
    random_state,
)

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


def _forward_backward(layer, x, state, lengths):
    x = x.clone().requires_grad_()
    state = layer.state_type(*(field.clone().requires_grad_() for field in state))
    layer.zero_grad()
    outputs, final = layer(x, state, lengths=lengths)
    output_weight, state_weights = loss_weights(outputs, final)
    loss = (outputs * output_weight).sum() + sum((f * w).sum() for f, w in zip(final, state_weights))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    return outputs, final, grads, x.grad, [field.grad for field in state]


@pytest.mark.parametrize("name", FUSED_CELLS)
@pytest.mark.parametrize(
    "config",
    [
        {"num_layers": 1, "bidirectional": False, "lengths": None, "batch_first": True, "train": False},
        {"num_layers": 2, "bidirectional": True, "lengths": LENGTHS, "batch_first": True, "train": False},
        {"num_layers": 2, "bidirectional": True, "lengths": LENGTHS, "batch_first": False, "train": True},
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
