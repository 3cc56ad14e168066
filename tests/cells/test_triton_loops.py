"""The Triton time loops (``cells.loops.gpu``) against the C++ loops, op by op, forward and backward.

Where no GPU is present ``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` and Triton's interpreter
runs the very same kernels on CPU tensors; on a CUDA machine they run compiled, on the GPU, and
the inputs are moved there. The C++ loops are held to the reference Python loop by
``test_fused_loops``, so agreement here carries the kernels back to the cells' equations.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch.testing import assert_close

from rnnzoo.cells import loops
from rnnzoo.cells.loops.ops import op

gpu = pytest.importorskip("rnnzoo.cells.loops.gpu", reason="triton is not installed")  # installed by the dev extra

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
T, B, H, DEPTH = 5, 19, 20, 3  # B and H not multiples of the tiles, so the padding lanes are exercised
TOLERANCE = {
    torch.float64: {"atol": 1e-12, "rtol": 1e-10},
    torch.float32: {"atol": 2e-5, "rtol": 2e-5},
}
# bfloat16 against the C++ loop in float32 on the same bfloat16 values, tensor by tensor relative to
# its largest value: the kernels store each step's state and saved values in bfloat16 (2**-8
# relative), the dots read the stored state, and sums such as the weight's gradient round to it.
BFLOAT16_NORMWISE = 2e-2
# The Phased LSTM's timestamps and gate (forward args 4-7) stay float32 in a bfloat16 loop, as the layer passes them.
FLOAT32_IN_BFLOAT16 = {"phased_lstm": range(4, 8)}


@pytest.fixture(autouse=True, scope="module")
def _cpp_loops():
    assert loops.available(torch.device("cpu")), "the C++ loops are the reference here"


@pytest.fixture(autouse=True)
def _several_weight_slices(monkeypatch):
    """Recurrent dots summed over two slices of units, as at the GPU's sizes (H = 128 reads two in
    float32, H = 256 eight), rather than one whole block at this test's H."""
    monkeypatch.setattr(gpu.common, "DOT_SLICE_BYTES", gpu.common.MIN_BLOCK * gpu.common.block_h(H) * torch.bfloat16.itemsize)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        assert gpu.common.block_k(H, dtype) * 2 == gpu.common.block_h(H)


def test_kernels_run_compiled_on_a_gpu_or_interpreted_without_one():
    assert torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
    assert loops.available(torch.device("cpu")), "the C++ loops are the reference here"


def _keep(with_keep: bool) -> torch.Tensor | None:
    if not with_keep:
        return None
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T
    return torch.arange(T).unsqueeze(1) < lengths  # (T, B)


OPS = {
    # name: (C++ op, Triton forward, Triton backward, number of state fields)
    "janet": ("janet_loop", gpu.janet.forward, gpu.janet.backward, 1),
    "indrnn": ("indrnn_loop", gpu.indrnn.forward, gpu.indrnn.backward, 1),
    "phased_lstm": ("phased_lstm_loop", gpu.lstm.phased_forward, gpu.lstm.phased_backward, 2),
    "lstm": ("lstm_loop", gpu.lstm.lstm_forward, gpu.lstm.lstm_backward, 2),
    "rhn": ("rhn_loop", gpu.rhn.forward, gpu.rhn.backward, 1),
}


def _forward_args(name: str, dtype: torch.dtype, keep: torch.Tensor | None, option: bool) -> tuple:
    def r(*shape, scale=1.0):
        return torch.randn(*shape, dtype=dtype) * scale

    if name == "janet":
        return r(T, B, 2 * H), r(B, H), r(2 * H, H, scale=0.3), keep, 0.0 if option else 1.0
    if name == "indrnn":
        return r(T, B, H), r(B, H), torch.rand(H, dtype=dtype) * 1.5, keep, not option  # relu, or tanh
    if name == "phased_lstm":
        times = torch.rand(T, B, dtype=dtype).mul(3).cumsum(0)
        period = torch.rand(H, dtype=dtype) * 4 + 1
        ratio_on = torch.rand(H, dtype=dtype) * 0.8 + 0.1
        if option:  # a learned r_on may reach or cross 0: both loops keep that unit's gate closed
            ratio_on[0] = -0.2
            ratio_on[1] = 0.0
        return r(T, B, 4 * H), r(B, H), r(B, H), r(4 * H, H, scale=0.3), times, period, torch.rand(H, dtype=dtype), ratio_on, keep, 0.01 if option else 0.0
    if name == "lstm":
        return r(T, B, 4 * H), r(B, H), r(B, H), r(4 * H, H, scale=0.3), keep
    mask = (torch.rand(B, H) > 0.3).to(dtype) / 0.7 if option else None  # variational state dropout
    return r(T, B, 2 * H), r(B, H), r(DEPTH, 2 * H, H, scale=0.3), r(DEPTH, 2 * H), mask, keep


def _backward_args(name: str, args: tuple, outputs: tuple, grads: tuple) -> tuple:
    """The backward op's arguments, in its schema's order, from the forward's args and outputs."""
    saved = outputs[1 + (2 if name in ("phased_lstm", "lstm") else 1) :]
    if name == "janet":
        return (*grads, args[2], args[3], *saved)
    if name == "indrnn":
        return (*grads, args[2], args[3], args[4], outputs[0], *saved)
    if name == "phased_lstm":
        return (*grads, args[3], args[8], *saved, *args[4:8], args[9])  # ... times, period, shift, ratio_on, leak
    if name == "lstm":
        return (*grads, args[3], args[4], *saved)
    return (*grads, args[2], args[4], args[5], *saved)


def _to(device: torch.device, values: tuple) -> tuple:
    return tuple(v.to(device) if isinstance(v, torch.Tensor) else v for v in values)


def _as_loop_dtype(name: str, args: tuple, dtype: torch.dtype) -> tuple[tuple, tuple]:
    """(the C++ loop's args, the Triton loop's): as made for float32/float64; for bfloat16 the
    Triton loop gets bfloat16 values (but the Phased LSTM's gate) and the C++ loop the very same
    values in float32."""
    if dtype != torch.bfloat16:
        return args, args
    kept = FLOAT32_IN_BFLOAT16.get(name, ())

    def rounded(index: int, value):
        floating = isinstance(value, torch.Tensor) and value.is_floating_point() and index not in kept
        return value.to(torch.bfloat16) if floating else value

    triton_args = tuple(rounded(i, v) for i, v in enumerate(args))
    return tuple(v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in triton_args), triton_args


@pytest.mark.parametrize("option", [False, True], ids=["default", "variant"])
@pytest.mark.parametrize("with_keep", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("name", list(OPS))
def test_triton_loop_matches_cpp_loop(name, dtype, with_keep, option):
    op_name, triton_forward, triton_backward, state_fields = OPS[name]
    cpp_forward = op(op_name)
    cpp_backward = op(f"{op_name}_backward")
    cpp_args, args = _as_loop_dtype(name, _forward_args(name, torch.float32 if dtype == torch.bfloat16 else dtype, _keep(with_keep), option), dtype)
    expected = cpp_forward(*cpp_args)
    actual = [t.cpu() for t in triton_forward(*_to(DEVICE, args))]
    assert expected[0].abs().max() > 1e-3, "outputs are all zero: the comparison would prove nothing"
    for index in range(1 + state_fields):  # outputs and final state (saved buffers are the kernels' own business)
        assert actual[index].dtype == dtype
        _assert_close(actual[index], expected[index], dtype, f"output {index}")

    grads = (torch.randn_like(expected[0]), *(torch.randn_like(expected[1 + i]) for i in range(state_fields)))
    grads = tuple(g.to(dtype) for g in grads)  # the C++ side gets them in float32, as it gets the forward's values
    expected_grads = cpp_backward(*_backward_args(name, cpp_args, expected, tuple(g.to(expected[0].dtype) for g in grads)))
    actual_grads = triton_backward(*_to(DEVICE, _backward_args(name, args, tuple(actual), grads)))
    assert len(actual_grads) == len(expected_grads)
    for index, (a, e) in enumerate(zip(actual_grads, expected_grads)):
        _assert_close(a.cpu(), e, dtype, f"gradient {index}")


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, loop_dtype: torch.dtype, label: str) -> None:
    """As close as ``loop_dtype`` allows (a bfloat16 loop's float32 gradients, the Phased LSTM's gate's, too)."""
    if loop_dtype != torch.bfloat16:
        assert_close(actual, expected, msg=lambda m: f"{label}: {m}", **TOLERANCE[expected.dtype])
        return
    error = (actual.to(expected.dtype) - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert error <= BFLOAT16_NORMWISE * scale, f"{label}: largest difference {error:.3g}, {error / scale:.2%} of the largest value {scale:.3g}"
