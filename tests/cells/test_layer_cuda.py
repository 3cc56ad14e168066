"""RecurrentLayer on CUDA: parity with the CPU, and cuDNN-ready weights on the fused path.

Outputs, final state and gradients on the GPU must match the CPU in full float32 (TF32 off), for
every sequence cell, fused or not. Skipped where torch.cuda.is_available() is False.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch.testing import assert_close

from tests.cells.layer_reference import (
    FUSED_CELLS,
    LENGTHS,
    SEQUENCE_CELLS,
    assert_nontrivial,
    inputs,
    loss_weights,
    make,
    pad_with_garbage,
    random_state,
    random_times,
)

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
    output_weight, state_weights = loss_weights(outputs.cpu(), [f.cpu() for f in final])
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
    tolerance = {"atol": 1e-4, "rtol": 1e-4}
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


OWN_LOOP_CELLS = [name for name in SEQUENCE_CELLS if name not in FUSED_CELLS]


def _float32_loss_run(layer, x, lengths, times):
    """Outputs, final state and gradients of a loss taken in float32 whatever the layer's dtype
    (a bfloat16 sum over every output would round the loss, not test the loop)."""
    x = x.clone().requires_grad_()
    layer.zero_grad()
    outputs, final = layer(x, lengths=lengths, times=times)
    output_weight, state_weights = loss_weights(outputs.float().cpu(), [f.float().cpu() for f in final])
    loss = (outputs.float() * output_weight.to(outputs.device)).sum()
    loss = loss + sum((f.float() * w.to(f.device)).sum() for f, w in zip(final, state_weights))
    loss.backward()
    grads = {name: p.grad.detach().float().cpu() for name, p in layer.named_parameters()}
    return outputs.detach().cpu(), [f.detach().float().cpu() for f in final], grads, x.grad.float().cpu()


LOOP_OPS = {"janet": "janet_loop", "indrnn": "indrnn_loop", "phased_lstm": "phased_lstm_loop", "rhn": "rhn_loop"}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bfloat16-model", "autocast"])
@pytest.mark.parametrize("name", OWN_LOOP_CELLS)
def test_cuda_bfloat16_runs_the_bfloat16_loop_close_to_float32(name, precision):
    """A bfloat16 model, or a float32 one under bfloat16 autocast (``amp: true``), on CUDA runs the
    Triton loops in bfloat16 (loops.loop_dtype): its outputs, final state and gradients against the
    same weights and inputs in float32 on the CPU, each tensor to 5% of its largest value (the loops
    store each step's state in bfloat16, and the projections and gradients round to it). The
    timestamps stay float32 in both."""
    from rnnzoo.cells import loops
    from rnnzoo.cells.loops.ops import versioned

    assert loops.loop_dtype(torch.bfloat16, torch.device("cuda")) == torch.bfloat16
    model = make(name, dtype=torch.float32, num_layers=2).train()
    if precision == "bfloat16-model":
        model = model.to(torch.bfloat16)
    cpu = copy.deepcopy(model).to("cpu", torch.float32)  # the very same (bfloat16-rounded, for a bfloat16 model) weights
    gpu = model.cuda()
    x = pad_with_garbage(inputs(dtype=torch.float32), LENGTHS, scale=10.0).to(torch.bfloat16).float()
    lengths = torch.tensor(LENGTHS)
    times = random_times(dtype=torch.float32) if cpu.takes_time else None

    expected = _float32_loss_run(cpu, x, lengths, times)
    x_gpu = x.cuda().to(torch.bfloat16) if precision == "bfloat16-model" else x.cuda()
    with (
        torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "autocast"),
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile,
    ):
        actual = _float32_loss_run(gpu, x_gpu, lengths.cuda(), None if times is None else times.cuda())
    assert_nontrivial(expected[0])
    ran = {event.name for event in profile.events()}
    assert f"rnnzoo::{versioned(LOOP_OPS[name])}" in ran, "the fused loop did not run"
    assert f"rnnzoo::{versioned(LOOP_OPS[name] + '_backward')}" in ran, "the fused loop's backward did not run"

    def close(a: torch.Tensor, e: torch.Tensor, label: str) -> None:
        error, scale = (a.float() - e).abs().max().item(), e.abs().max().item()
        assert error <= 0.05 * scale, f"{label}: largest difference {error:.3g} of largest value {scale:.3g}"

    close(actual[0], expected[0], "outputs")
    for index, (a, e) in enumerate(zip(actual[1], expected[1])):
        close(a, e, f"state field {index}")
    for key in expected[2]:
        close(actual[2][key], expected[2][key], f"gradient of {key}")
    close(actual[3], expected[3], "gradient of the input")
