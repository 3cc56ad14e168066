"""Every Triton loop kernel compiled for an H100/H200 (sm_90), where no GPU is needed to do it.

Triton's interpreter (``test_triton_loops``) runs the kernels' arithmetic on the CPU but not their
compilation: it reads module globals a compiled kernel may not, and it has no shared memory to run
out of. Compiling ahead of time for sm_90 (Triton ships ``ptxas``) catches both: a kernel that
does not compile, or that asks one block for more shared memory than an H100/H200 SM has, fails
here, at every hidden size the layer sends to the GPU (up to ``MAX_TRITON_HIDDEN``) and with the
launch settings the wrappers use.

Where no GPU is present ``tests/conftest.py`` sets ``TRITON_INTERPRET=1``, which makes every
``@triton.jit`` an interpreted function that cannot be compiled: each kernel is compiled in a child
process without it (``python -m tests.cells.test_triton_resources CASES``), which also compiles a
kernel that reads a plain module global: the compiler must refuse it, as it refused the LSTM
kernels' LSTM_SAVED (the interpreter ran them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed")  # installed by the dev extra
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.errors import CompilationError

from rnnzoo.cells import loops
from rnnzoo.cells.loops import gpu
from rnnzoo.cells.loops.gpu import common

# H100/H200 (sm_90): 227 KiB of shared memory a block can opt into (CUDA's
# cudaDevAttrMaxSharedMemoryPerBlockOptin, which Triton's launcher requests when a kernel needs more than 48 KiB).
SHARED_MEMORY_LIMIT = 232_448
SM_90 = GPUTarget("cuda", 90, 32)

KERNELS = {
    # name: kernel, the constexpr switches set (each on: the most a kernel holds)
    "janet forward": (gpu.janet._forward, {"HAS_KEEP": True}),
    "janet backward": (gpu.janet._backward, {"HAS_KEEP": True}),
    "lstm forward": (gpu.lstm._forward, {"HAS_KEEP": True, "GATED": True}),
    "lstm backward": (gpu.lstm._backward, {"HAS_KEEP": True, "GATED": True}),
    "rhn forward": (gpu.rhn._forward, {"HAS_KEEP": True, "HAS_MASK": True}),
    "rhn backward": (gpu.rhn._backward, {"HAS_KEEP": True, "HAS_MASK": True}),
    "indrnn forward": (gpu.indrnn._forward, {"HAS_KEEP": True, "RELU": False}),
    "indrnn backward": (gpu.indrnn._backward, {"HAS_KEEP": True, "RELU": False}),
}
SCALARS = {"T": "i32", "B": "i32", "H": "i32", "D": "i32", "shift": "fp32", "leak": "fp32"}
TIME_GATE = {"TIMES", "INV_PERIOD", "SHIFT", "INV_RATIO"}  # the Phased LSTM's


def _compile(kernel, switches: dict, hidden: int, batch: int, dtype: torch.dtype):
    """The kernel compiled for sm_90 as its wrapper launches it for (batch, hidden) in ``dtype``."""
    if "BLOCK_K" in kernel.arg_names:  # the dense loops: what their wrappers launch with
        launch = common.dense_launch(batch, hidden, dtype)
        options = {name: launch.pop(name) for name in ("num_warps", "num_stages")}
    else:  # IndRNN's elementwise loop: fixed tiles over rows and units
        launch = {"BLOCK_B": gpu.indrnn.BLOCK_B, "BLOCK_H": gpu.indrnn.BLOCK_H, "COMPUTE": common.compute_dtype(dtype)}
        options = {}
    constants = {**launch, **switches}
    element = {torch.float32: "fp32", torch.float64: "fp64", torch.bfloat16: "bf16"}[dtype]
    signature = {}
    for param in kernel.params:
        if param.is_constexpr:
            signature[param.name] = "constexpr"
        elif param.name in SCALARS:
            signature[param.name] = SCALARS[param.name]
        elif param.name == "KEEP":
            signature[param.name] = "*i1"
        elif param.name in TIME_GATE:  # float32 at least, whatever the loop's dtype (cells/layer.py)
            signature[param.name] = "*fp64" if dtype == torch.float64 else "*fp32"
        else:
            signature[param.name] = f"*{element}"
    unknown = {name for name, kind in signature.items() if kind == "constexpr"} - constants.keys()
    assert not unknown, f"set these constexprs in the test: {unknown}"
    constexprs = {(index,): constants[name] for index, name in enumerate(signature) if signature[name] == "constexpr"}
    return triton.compile(ASTSource(kernel, signature, constexprs), target=SM_90, options=options)


# (hidden, batch, dtype). By default the GPU shape at H = 256 in float32 (a few seconds a
# kernel); under -m slow (up to 40 s a kernel) bfloat16 (tensor-core dots) there, H = 128, the largest
# H the layer sends here, B > 256 (the larger row tile), FlashRNN's shape (bfloat16, H = 768, B = 16)
# and float64 (twice the bytes a weight slice, past DOT_SLICE_BYTES at H = 1024).
CASES = {
    "default": [(256, 32, "float32")],
    "more": [
        (256, 32, "bfloat16"),
        (128, 512, "float32"),
        (256, 512, "float32"),
        (loops.MAX_TRITON_HIDDEN, 512, "float32"),
        (loops.MAX_TRITON_HIDDEN, 512, "bfloat16"),
        (768, 16, "bfloat16"),
        (256, 32, "float64"),
        (loops.MAX_TRITON_HIDDEN, 32, "float64"),  # a slice past DOT_SLICE_BYTES: one stage
    ],
}


def _shared_memory(cases: str) -> dict[str, int | str]:
    """{"kernel at case": shared bytes, or the compile error} for every kernel at each of ``CASES[cases]``
    (in this process: one child compiles them all)."""
    found: dict[str, int | str] = {}
    for kernel, (function, switches) in KERNELS.items():
        for hidden, batch, dtype in CASES[cases]:
            case = f"{kernel} at (H, B, dtype) = ({hidden}, {batch}, {dtype})"
            try:
                found[case] = _compile(function, switches, hidden, batch, getattr(torch, dtype)).metadata.shared
            except Exception as error:  # noqa: BLE001  reported by the test, whatever the compiler or ptxas raised
                found[case] = f"{type(error).__name__}: {str(error).strip().splitlines()[-1]}"
    return found


def _in_child(*args: str) -> dict:
    """``python -m tests.cells.test_triton_resources *args`` without the interpreter: its JSON answer."""
    environment = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.cells.test_triton_resources", *args],
        cwd=Path(__file__).parents[2], env=environment, capture_output=True, text=True, timeout=1800, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("cases", ["default", pytest.param("more", marks=pytest.mark.slow)])
def test_every_kernel_compiles_for_sm90_within_its_shared_memory(cases):
    found = _in_child(cases)
    # The compiler, unlike the interpreter, refuses a plain module global (the LSTM kernels once read
    # LSTM_SAVED so): checked in the same child, which spends seconds importing torch.
    assert "NOT_CONSTEXPR" in found.pop("a kernel reading a plain global")
    assert len(found) == len(KERNELS) * len(CASES[cases])
    failed = {case: shared for case, shared in found.items() if not isinstance(shared, int)}
    assert not failed, f"do not compile for sm_90: {failed}"
    over = {case: shared for case, shared in found.items() if shared > SHARED_MEMORY_LIMIT}
    assert not over, f"need more than {SHARED_MEMORY_LIMIT} bytes of shared memory a block: {over}"


NOT_CONSTEXPR = 6


def _compile_reading_a_plain_global() -> str:
    """The compiler's error for a kernel that reads NOT_CONSTEXPR, a plain module global ("" if none)."""

    @triton.jit
    def reads_a_global(X):
        triton.language.store(X, NOT_CONSTEXPR)

    try:
        triton.compile(ASTSource(reads_a_global, {"X": "*i32"}, {}), target=SM_90)
    except CompilationError as error:
        return str(error)
    return ""


if __name__ == "__main__":
    print(json.dumps({**_shared_memory(sys.argv[1]), "a kernel reading a plain global": _compile_reading_a_plain_global()}))
