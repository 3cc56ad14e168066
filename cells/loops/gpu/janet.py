"""JANET's time loop in Triton: ``rnnzoo::janet_loop`` and its backward on CUDA (see csrc/janet.cpp)."""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from rnnzoo.cells.loops.gpu.common import (
    dense_launch,
    grid,
    keep_or_empty,
    kept,
    recurrent_dot,
    row_tile,
    sigmoid,
    slab_at,
    tanh,
)


@triton.jit
def _forward(
    P, C0, W, KEEP, OUT, STATES, ACT, T, B, H, shift,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HAS_KEEP: tl.constexpr,
    COMPUTE: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, units, row_ok, tile, at = row_tile(B, H, BLOCK_B, BLOCK_H)
    c = tl.load(C0 + at, mask=tile, other=0.0).to(COMPUTE)
    tl.store(STATES + at, c.to(STATES.dtype.element_ty), mask=tile)
    for t in range(T):
        tl.debug_barrier()  # c_{t-1}, stored at STATES[t] by every thread, is what the dots read
        gate_at = slab_at(t, B, 2 * H, rows, units)
        # c_{t-1} @ W^T's two (H, H) blocks: forget (rows 0..H of W) and candidate (rows H..2H).
        s = tl.load(P + gate_at, mask=tile, other=0.0).to(COMPUTE) + recurrent_dot(
            STATES, t, B, H, rows, row_ok, W, H, units, W, BLOCK_B, BLOCK_H, BLOCK_K, True, False, COMPUTE, PRECISION
        )
        cand = tl.load(P + gate_at + H, mask=tile, other=0.0).to(COMPUTE) + recurrent_dot(
            STATES, t, B, H, rows, row_ok, W + H * H, H, units, W, BLOCK_B, BLOCK_H, BLOCK_K, True, False, COMPUTE, PRECISION
        )
        f = sigmoid(s)
        f_shifted = sigmoid(s - shift)
        g = tanh(cand)
        c_new = f * c + (1.0 - f_shifted) * g
        out = c_new
        if HAS_KEEP:  # past a sequence's end the state stays and the output is 0
            keep = kept(KEEP, t, B, rows, row_ok)
            c_new = tl.where(keep, c_new, c)
            out = tl.where(keep, out, 0.0)
        act_at = slab_at(t, B, 3 * H, rows, units)
        tl.store(ACT + act_at, f.to(ACT.dtype.element_ty), mask=tile)
        tl.store(ACT + act_at + H, f_shifted.to(ACT.dtype.element_ty), mask=tile)
        tl.store(ACT + act_at + 2 * H, g.to(ACT.dtype.element_ty), mask=tile)
        tl.store(OUT + slab_at(t, B, H, rows, units), out.to(OUT.dtype.element_ty), mask=tile)
        tl.store(STATES + slab_at(t + 1, B, H, rows, units), c_new.to(STATES.dtype.element_ty), mask=tile)
        c = c_new


@triton.jit
def _backward(
    GOUT, GFINAL, W, KEEP, ACT, STATES, GPRE, GC0, T, B, H,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HAS_KEEP: tl.constexpr,
    COMPUTE: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, units, row_ok, tile, at = row_tile(B, H, BLOCK_B, BLOCK_H)
    dc = tl.load(GFINAL + at, mask=tile, other=0.0).to(COMPUTE)
    for step in range(T):
        t = T - 1 - step
        act_at = slab_at(t, B, 3 * H, rows, units)
        f = tl.load(ACT + act_at, mask=tile, other=0.0).to(COMPUTE)
        f_shifted = tl.load(ACT + act_at + H, mask=tile, other=0.0).to(COMPUTE)
        g = tl.load(ACT + act_at + 2 * H, mask=tile, other=0.0).to(COMPUTE)
        c_prev = tl.load(STATES + slab_at(t, B, H, rows, units), mask=tile, other=0.0).to(COMPUTE)
        d = dc + tl.load(GOUT + slab_at(t, B, H, rows, units), mask=tile, other=0.0).to(COMPUTE)
        d_s = d * (c_prev * f * (1.0 - f) - g * f_shifted * (1.0 - f_shifted))
        d_cand = d * (1.0 - f_shifted) * (1.0 - g * g)
        direct = d * f
        if HAS_KEEP:  # a step that did not happen passes its state's gradient through
            keep = kept(KEEP, t, B, rows, row_ok)
            d_s = tl.where(keep, d_s, 0.0)
            d_cand = tl.where(keep, d_cand, 0.0)
            direct = tl.where(keep, direct, dc)
        gate_at = slab_at(t, B, 2 * H, rows, units)
        tl.store(GPRE + gate_at, d_s.to(GPRE.dtype.element_ty), mask=tile)
        tl.store(GPRE + gate_at + H, d_cand.to(GPRE.dtype.element_ty), mask=tile)
        tl.debug_barrier()  # every thread's d_s and d_cand, as stored, are what the dots read
        # dc_{t-1} gets dpre @ W: W's two blocks as they are.
        dc = direct + recurrent_dot(
            GPRE, t, B, 2 * H, rows, row_ok, W, H, units, W, BLOCK_B, BLOCK_H, BLOCK_K, False, False, COMPUTE, PRECISION
        )
        dc += recurrent_dot(
            GPRE + H, t, B, 2 * H, rows, row_ok, W + H * H, H, units, W, BLOCK_B, BLOCK_H, BLOCK_K, False, False, COMPUTE, PRECISION
        )
    tl.store(GC0 + at, dc.to(GC0.dtype.element_ty), mask=tile)


def forward(projected: Tensor, c0: Tensor, weight_hh: Tensor, keep: Tensor | None, shift: float) -> tuple[Tensor, ...]:
    steps, batch, hidden = projected.shape[0], projected.shape[1], c0.shape[1]
    projected, c0, weight_hh = projected.contiguous(), c0.contiguous(), weight_hh.contiguous()
    outputs = projected.new_empty(steps, batch, hidden)
    activations = projected.new_empty(steps, batch, 3 * hidden)
    states = projected.new_empty(steps + 1, batch, hidden)
    _forward[grid(batch)](
        projected, c0, weight_hh, keep_or_empty(keep, projected), outputs, states, activations, steps, batch, hidden, shift,
        HAS_KEEP=keep is not None,
        **dense_launch(batch, hidden, projected.dtype),
    )
    return outputs, states[steps].clone(), activations, states


def backward(
    grad_outputs: Tensor, grad_final: Tensor, weight_hh: Tensor, keep: Tensor | None, activations: Tensor, states: Tensor
) -> tuple[Tensor, ...]:
    steps, batch, hidden = grad_outputs.shape
    grad_pre = grad_outputs.new_empty(steps, batch, 2 * hidden)
    grad_c0 = grad_final.new_empty(batch, hidden)
    _backward[grid(batch)](
        grad_outputs.contiguous(), grad_final.contiguous(), weight_hh.contiguous(), keep_or_empty(keep, grad_outputs),
        activations, states, grad_pre, grad_c0, steps, batch, hidden,
        HAS_KEEP=keep is not None,
        **dense_launch(batch, hidden, grad_outputs.dtype),
    )
    grad_weight_hh = grad_pre.view(steps * batch, 2 * hidden).t() @ states[:steps].reshape(steps * batch, hidden)
    return grad_pre, grad_c0, grad_weight_hh.to(weight_hh.dtype)
