"""Shared pieces of the Triton time loops: activations, block sizes, launch settings.

Every loop kernel runs one program per tile of ``BLOCK_B`` batch rows; the program holds all
hidden units of its rows and runs the whole time loop, so the state stays in registers between
steps and no program waits on another (batch rows are independent). ``BLOCK_H`` is the hidden
size rounded up to a power of two (Triton's block shapes); the padding lanes hold zeros.

The recurrent matmul (:func:`recurrent_dot`) reads the weight in ``(BLOCK_K, BLOCK_H)`` slices
(``block_k``) from global memory each step (L2 hits after the first: an LSTM's 4H² float32 values
are 1 MiB at H = 256, 16 MiB at 1024, of an H100's 50 MiB of L2) and the state it multiplies from
the slab the kernel has just written. Holding whole ``(H, H)`` blocks on chip, as the loops first
did, needs more than an H100/H200 SM's 227 KiB of shared memory from H = 128 on (an LSTM's four
float32 blocks are 256 KiB): ``tests/cells/test_triton_resources.py`` compiles every kernel for
sm_90 and holds it under that limit up to ``MAX_TRITON_HIDDEN``.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# tl.dot needs at least 16 rows a block.
MIN_BLOCK = 16
# Bytes of one weight slice a dot reads, (BLOCK_K, BLOCK_H): every kernel's operands then fit in
# shared memory at any BLOCK_H up to 1024 (test_triton_resources).
DOT_SLICE_BYTES = 32 * 1024
# Triton's interpreter (3.8) multiplies bfloat16 by their raw bits (it stores them as uint16): under
# it recurrent_dot multiplies in the compute dtype, so the bfloat16 tests hold everything else
# (loads, stores, rounding of the saved values) and compiled kernels keep tensor-core bfloat16 dots.
INTERPRETED: tl.constexpr = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # tanh(x) = 2σ(2x) - 1: portable to the interpreter (no libdevice), exact to float rounding.
    return 2.0 * sigmoid(2.0 * x) - 1.0


@triton.jit
def row_tile(B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """This program's batch rows and hidden units: rows, units, rows in range, the (rows, units)
    mask, and their offsets in a (B, H) slab. The units are tile ``program_id(1)`` of BLOCK_H: all
    of them in a grid over rows only (its program_id(1) is 0), one tile in IndRNN's grid over both."""
    # int64 rows: offsets such as (t * B + row) * 6H pass 2**31 on a large GPU's memory.
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows < B
    tile = row_ok[:, None] & (units < H)[None, :]
    return rows, units, row_ok, tile, rows[:, None] * H + units[None, :]


@triton.jit
def slab_at(step, B, width, rows, units):
    """Offsets of (rows, units) in slab ``step`` of a (steps, B, width) tensor (int64, as rows are)."""
    return (step * B + rows[:, None]) * width + units[None, :]


@triton.jit
def kept(KEEP, t, B, rows, row_ok):
    """Which rows' step t lies inside their sequence, as a (rows, 1) mask."""
    return (tl.load(KEEP + t * B + rows, mask=row_ok, other=0) != 0)[:, None]


@triton.jit
def recurrent_dot(
    X, step, B, width, rows, row_ok, W, H, units, MASK,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    TRANSPOSED: tl.constexpr, HAS_MASK: tl.constexpr, COMPUTE: tl.constexpr, PRECISION: tl.constexpr,
):
    """``x @ W^T`` (TRANSPOSED) or ``x @ W`` for this program's rows, a (BLOCK_B, BLOCK_H) tile in COMPUTE.

    x: (rows, H), slab ``step`` of the (steps, B, width) tensor at X, times MASK's (B, H) rows where
    HAS_MASK; W: an (H, H) row-major block. Read in BLOCK_K slices of the units summed over. The
    caller wrote x's slab this step or the last, from all its threads: it calls ``tl.debug_barrier()``
    between that store and this, so every thread reads every unit's value.
    """
    unit_ok = units < H
    acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=COMPUTE)
    for start in range(0, BLOCK_H, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        k_ok = ks < H
        x_ok = row_ok[:, None] & k_ok[None, :]
        x = tl.load(X + slab_at(step, B, width, rows, ks), mask=x_ok, other=0.0)
        if HAS_MASK:
            x = x.to(COMPUTE) * tl.load(MASK + rows[:, None] * H + ks[None, :], mask=x_ok, other=0.0).to(COMPUTE)
        w_ok = k_ok[:, None] & unit_ok[None, :]
        if TRANSPOSED:
            w = tl.load(W + units[None, :] * H + ks[:, None], mask=w_ok, other=0.0)
        else:
            w = tl.load(W + ks[:, None] * H + units[None, :], mask=w_ok, other=0.0)
        if INTERPRETED:
            acc += tl.dot(x.to(COMPUTE), w.to(COMPUTE), input_precision=PRECISION).to(COMPUTE)
        else:  # bfloat16 operands accumulate in float32 (tl.dot's default out_dtype)
            acc += tl.dot(x.to(w.dtype), w, input_precision=PRECISION).to(COMPUTE)
    return acc


def keep_or_empty(keep: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The kernels' KEEP argument: the (T, B) mask, or an empty placeholder when every step counts."""
    return keep if keep is not None else like.new_empty(0, dtype=torch.bool)


def block_h(hidden: int) -> int:
    return max(MIN_BLOCK, triton.next_power_of_2(hidden))


def block_k(hidden: int, dtype: torch.dtype) -> int:
    """Units summed over per slice of :func:`recurrent_dot`: a (BLOCK_K, BLOCK_H) weight slice of at
    most DOT_SLICE_BYTES, and at least tl.dot's 16 (which passes it from H = 512 in float32)."""
    width = block_h(hidden)
    return max(MIN_BLOCK, min(width, DOT_SLICE_BYTES // (width * dtype.itemsize)))


def num_warps(hidden: int) -> int:
    """Warps a program: its (BLOCK_B, BLOCK_H) tiles spread over more threads as H grows, 16-32
    values a thread and tile (ptxas still spills some registers at large H; speed unmeasured)."""
    return min(16, max(4, block_h(hidden) // 32))


def block_b(batch: int) -> int:
    # One tile of rows per program: small tiles keep more programs (SMs) busy at small batches.
    return MIN_BLOCK if batch <= 256 else 32


def dense_launch(batch: int, hidden: int, dtype: torch.dtype) -> dict:
    """The block sizes, compute dtype, dot precision and launch options of the dense loops (JANET,
    LSTM, RHN) for a (batch, hidden) loop in ``dtype``: one place for the kernels' wrappers and
    the test that compiles them (test_triton_resources)."""
    slice_bytes = block_k(hidden, dtype) * block_h(hidden) * dtype.itemsize
    return {
        "BLOCK_B": block_b(batch),
        "BLOCK_H": block_h(hidden),
        "BLOCK_K": block_k(hidden, dtype),
        "COMPUTE": compute_dtype(dtype),
        "PRECISION": input_precision(dtype),
        "num_warps": num_warps(hidden),
        # Triton's pipeliner (3 stages by default on CUDA) keeps a second copy of each slice in flight;
        # past DOT_SLICE_BYTES (float64 at H > 256, float32 at H > 512) two no longer fit beside the
        # rest in every kernel: one slice at a time there.
        "num_stages": 1 if slice_bytes > DOT_SLICE_BYTES else 3,
    }


def grid(batch: int) -> tuple[int]:
    return (triton.cdiv(batch, block_b(batch)),)


def compute_dtype(dtype: torch.dtype) -> tl.dtype:
    """float64 stays float64; float32 and bfloat16 compute in float32 (bfloat16: what the kernels
    load and store, and multiply the recurrent weight in)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def input_precision(dtype: torch.dtype) -> str:
    """float32 dots in IEEE precision unless torch allows TF32 (off by default); bfloat16 ignores it."""
    if dtype in (torch.float32, torch.float64) and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"
