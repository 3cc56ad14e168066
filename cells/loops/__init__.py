"""Fused time loops: a whole sequence in one op per layer direction, forward and backward.

``cells.layer.RecurrentLayer`` runs a cell through its fused loop (``RecurrentCell.fused_loop``)
when ``fused=True`` (the default), ``time_loop="python"``, and ``available(device)`` (C++ on the
CPU, Triton on CUDA); otherwise
it runs the reference Python loop over ``recurrent_step``, which the tests hold the fused loops
to (outputs, final state and every gradient).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from rnnzoo.cells.loops import native, ops  # noqa: F401  ops: the schemas, defined on import


def _assume_constant_result(fn: Callable[..., bool]) -> Callable[..., bool]:
    """``torch.compiler.assume_constant_result`` without importing torch._dynamo (1.8 s, every
    process that imports the cells): the mark it sets, which a test holds equal to torch's."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


# Traced as a constant by torch.compile: the answer (a build on disk) does not change within a process.
@_assume_constant_result
def available(device: torch.device, hidden_size: int = 1) -> bool:
    """Whether fused loop kernels exist for ``device`` and ``hidden_size``: CPU, the C++ build (made
    on first call); CUDA, the Triton kernels (``cells.loops.gpu``, where triton is installed), which
    hold a layer's units in one block and so stop at ``MAX_TRITON_HIDDEN``."""
    if device.type == "cpu":
        return native.load()
    if device.type == "cuda":
        return hidden_size <= MAX_TRITON_HIDDEN and _triton_registered()
    return False


def loop_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype a fused loop takes and gives (its inputs, outputs and saved values) for a layer
    input projected in ``dtype``: float32 and float64 as they are; bfloat16 on CUDA too (the
    Triton loops load and store bfloat16, multiply the recurrent weight in it on tensor cores and
    accumulate and carry the state in float32, as cuDNN's bfloat16 LSTM does); float16, and
    bfloat16 on the CPU (the C++ loops are float32 and float64), in float32."""
    if dtype in (torch.float32, torch.float64) or (dtype == torch.bfloat16 and device.type == "cuda"):
        return dtype
    return torch.float32


# A program holds (rows, H) tiles of its state in registers (16 warps at H = 1024); to this H every
# kernel compiles for sm_90 within its shared memory (tests/cells/test_triton_resources.py, -m slow).
MAX_TRITON_HIDDEN = 1024


@functools.cache
def _triton_registered() -> bool:
    try:
        import rnnzoo.cells.loops.gpu  # noqa: F401  registers the CUDA kernels
    except ImportError:  # no triton (a CPU-only install): the reference loop, as before
        return False
    return True
