"""Shared pieces of the Triton time loops: activations, block sizes, launch settings.

Every loop kernel runs one program per tile of ``BLOCK_B`` batch rows; the program holds all
hidden units of its rows and runs the whole time loop, so the state stays on chip between steps
and no program waits on another (batch rows are independent). The recurrent weight is read in
``(BLOCK_H, BLOCK_H)`` tiles that stay resident in L1/L2 across steps. ``BLOCK_H`` is the hidden
size rounded up to a power of two (Triton's block shapes); the padding lanes hold zeros.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# tl.dot needs at least 16 rows a block.
MIN_BLOCK = 16


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
def square_tile(base, H, units, TRANSPOSED: tl.constexpr):
    """The (H, H) block at ``base`` (row-major, rows of H): as it is, or transposed (for x @ W^T)."""
    ok = (units < H)[:, None] & (units < H)[None, :]
    if TRANSPOSED:
        return tl.load(base + units[None, :] * H + units[:, None], mask=ok, other=0.0)
    return tl.load(base + units[:, None] * H + units[None, :], mask=ok, other=0.0)


def keep_or_empty(keep: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The kernels' KEEP argument: the (T, B) mask, or an empty placeholder when every step counts."""
    return keep if keep is not None else like.new_empty(0, dtype=torch.bool)


def block_h(hidden: int) -> int:
    return max(MIN_BLOCK, triton.next_power_of_2(hidden))


def block_b(batch: int) -> int:
    # One tile of rows per program: small tiles keep more programs (SMs) busy at small batches.
    return MIN_BLOCK if batch <= 256 else 32


def grid(batch: int) -> tuple[int]:
    return (triton.cdiv(batch, block_b(batch)),)


def compute_dtype(dtype: torch.dtype) -> tl.dtype:
    """float64 stays float64; float32 and bfloat16 compute in float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def input_precision(dtype: torch.dtype) -> str:
    """float32 dots in IEEE precision unless torch allows TF32 (off by default); bfloat16 ignores it."""
    if dtype in (torch.float32, torch.float64) and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"
