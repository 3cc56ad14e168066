"""IndRNN's time loop in Triton: ``rnnzoo::indrnn_loop`` and its backward on CUDA (see csrc/indrnn.cpp).

The recurrence is elementwise, so units are independent as well as rows: the grid tiles both,
and each program streams its (rows, units) tile through time at memory speed.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from rnnzoo.cells.loops.gpu.common import compute_dtype, keep_or_empty, kept, row_tile, slab_at, tanh

BLOCK_B, BLOCK_H = 16, 64


@triton.jit
def _forward(
    P, H0, U, KEEP, OUT, STATES, T, B, H,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, HAS_KEEP: tl.constexpr, RELU: tl.constexpr, COMPUTE: tl.constexpr,
):
    rows, units, row_ok, tile, at = row_tile(B, H, BLOCK_B, BLOCK_H)
    u = tl.load(U + units, mask=units < H, other=0.0).to(COMPUTE)[None, :]
    h = tl.load(H0 + at, mask=tile, other=0.0).to(COMPUTE)
    tl.store(STATES + at, h.to(STATES.dtype.element_ty), mask=tile)
    for t in range(T):
        z = tl.load(P + slab_at(t, B, H, rows, units), mask=tile, other=0.0).to(COMPUTE) + u * h
        if RELU:
            h_new = tl.maximum(z, 0.0)
        else:
            h_new = tanh(z)
        out = h_new
        if HAS_KEEP:
            keep = kept(KEEP, t, B, rows, row_ok)
            h_new = tl.where(keep, h_new, h)
            out = tl.where(keep, out, 0.0)
        tl.store(OUT + slab_at(t, B, H, rows, units), out.to(OUT.dtype.element_ty), mask=tile)
        tl.store(STATES + slab_at(t + 1, B, H, rows, units), h_new.to(STATES.dtype.element_ty), mask=tile)
        h = h_new


@triton.jit
def _backward(
    GOUT, GFINAL, U, KEEP, OUT, GPRE, GH0, T, B, H,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, HAS_KEEP: tl.constexpr, RELU: tl.constexpr, COMPUTE: tl.constexpr,
):
    rows, units, row_ok, tile, at = row_tile(B, H, BLOCK_B, BLOCK_H)
    u = tl.load(U + units, mask=units < H, other=0.0).to(COMPUTE)[None, :]
    dh = tl.load(GFINAL + at, mask=tile, other=0.0).to(COMPUTE)
    for step in range(T):
        t = T - 1 - step
        y = tl.load(OUT + slab_at(t, B, H, rows, units), mask=tile, other=0.0).to(COMPUTE)
        d = dh + tl.load(GOUT + slab_at(t, B, H, rows, units), mask=tile, other=0.0).to(COMPUTE)
        if RELU:
            dz = tl.where(y > 0.0, d, 0.0)  # ReLU's gradient at 0 is 0, as torch's
        else:
            dz = d * (1.0 - y * y)
        new_dh = dz * u
        if HAS_KEEP:
            keep = kept(KEEP, t, B, rows, row_ok)
            dz = tl.where(keep, dz, 0.0)
            new_dh = tl.where(keep, new_dh, dh)
        tl.store(GPRE + slab_at(t, B, H, rows, units), dz.to(GPRE.dtype.element_ty), mask=tile)
        dh = new_dh
    tl.store(GH0 + at, dh.to(GH0.dtype.element_ty), mask=tile)


def _grid(batch: int, hidden: int) -> tuple[int, int]:
    return triton.cdiv(batch, BLOCK_B), triton.cdiv(hidden, BLOCK_H)


def forward(projected: Tensor, h0: Tensor, recurrent_weight: Tensor, keep: Tensor | None, relu: bool) -> tuple[Tensor, ...]:
    steps, batch, hidden = projected.shape[0], projected.shape[1], h0.shape[1]
    outputs = projected.new_empty(steps, batch, hidden)
    states = projected.new_empty(steps + 1, batch, hidden)
    _forward[_grid(batch, hidden)](
        projected.contiguous(), h0.contiguous(), recurrent_weight.contiguous(),
        keep_or_empty(keep, projected), outputs, states, steps, batch, hidden,
        BLOCK_B=BLOCK_B, BLOCK_H=BLOCK_H, HAS_KEEP=keep is not None, RELU=relu, COMPUTE=compute_dtype(projected.dtype),
    )
    return outputs, states[steps].clone(), states


def backward(
    grad_outputs: Tensor, grad_final: Tensor, recurrent_weight: Tensor, keep: Tensor | None, relu: bool, outputs: Tensor, states: Tensor
) -> tuple[Tensor, ...]:
    steps, batch, hidden = grad_outputs.shape
    grad_pre = grad_outputs.new_empty(steps, batch, hidden)
    grad_h0 = grad_final.new_empty(batch, hidden)
    _backward[_grid(batch, hidden)](
        grad_outputs.contiguous(), grad_final.contiguous(), recurrent_weight.contiguous(),
        keep_or_empty(keep, grad_outputs), outputs, grad_pre, grad_h0, steps, batch, hidden,
        BLOCK_B=BLOCK_B, BLOCK_H=BLOCK_H, HAS_KEEP=keep is not None, RELU=relu, COMPUTE=compute_dtype(grad_outputs.dtype),
    )
    # du = Σ_t Σ_b dpre_t ⊙ h_{t-1} (zero where a step did not happen: dpre is zero there).
    grad_u = (grad_pre * states[:steps]).sum((0, 1))
    return grad_pre, grad_h0, grad_u.to(recurrent_weight.dtype)
