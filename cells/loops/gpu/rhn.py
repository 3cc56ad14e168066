"""The RHN's time loop in Triton: ``rnnzoo::rhn_loop`` and its backward on CUDA (see csrc/rhn.cpp)."""

from __future__ import annotations

import torch
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
    P, S0, W, BIAS, MASK, KEEP, OUT, FINAL, LAYER_STATES, ACT, T, B, H, D,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HAS_MASK: tl.constexpr, HAS_KEEP: tl.constexpr,
    COMPUTE: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, units, row_ok, tile, at = row_tile(B, H, BLOCK_B, BLOCK_H)
    unit_ok = units < H
    s = tl.load(S0 + at, mask=tile, other=0.0).to(COMPUTE)
    for t in range(T):
        s_start = s
        for layer in range(D):
            slab = layer * T + t
            tl.store(LAYER_STATES + slab_at(slab, B, H, rows, units), s.to(LAYER_STATES.dtype.element_ty), mask=tile)
            tl.debug_barrier()  # every thread's s, as stored, is what the dots read (times the mask)
            # The input enters the first micro-layer only: a load masked off for the others.
            first = tile & (layer == 0)
            gate_at = slab_at(t, B, 2 * H, rows, units)
            bias_h = tl.load(BIAS + layer * 2 * H + units, mask=unit_ok, other=0.0).to(COMPUTE)[None, :]
            bias_t = tl.load(BIAS + layer * 2 * H + H + units, mask=unit_ok, other=0.0).to(COMPUTE)[None, :]
            pre_h = bias_h + recurrent_dot(
                LAYER_STATES, slab, B, H, rows, row_ok, W + (2 * layer + 0) * H * H, H, units, MASK,
                BLOCK_B, BLOCK_H, BLOCK_K, True, HAS_MASK, COMPUTE, PRECISION,
            )
            pre_t = bias_t + recurrent_dot(
                LAYER_STATES, slab, B, H, rows, row_ok, W + (2 * layer + 1) * H * H, H, units, MASK,
                BLOCK_B, BLOCK_H, BLOCK_K, True, HAS_MASK, COMPUTE, PRECISION,
            )
            pre_h += tl.load(P + gate_at, mask=first, other=0.0).to(COMPUTE)
            pre_t += tl.load(P + gate_at + H, mask=first, other=0.0).to(COMPUTE)
            h = tanh(pre_h)
            transform = sigmoid(pre_t)
            act_at = slab_at(layer * T + t, B, 2 * H, rows, units)
            tl.store(ACT + act_at, h.to(ACT.dtype.element_ty), mask=tile)
            tl.store(ACT + act_at + H, transform.to(ACT.dtype.element_ty), mask=tile)
            s = h * transform + s * (1.0 - transform)
        out = s
        if HAS_KEEP:  # past a sequence's end the state stays and the output is 0
            keep = kept(KEEP, t, B, rows, row_ok)
            s = tl.where(keep, s, s_start)
            out = tl.where(keep, out, 0.0)
        tl.store(OUT + slab_at(t, B, H, rows, units), out.to(OUT.dtype.element_ty), mask=tile)
    tl.store(FINAL + at, s.to(FINAL.dtype.element_ty), mask=tile)


@triton.jit
def _backward(
    GOUT, GFINAL, W, MASK, KEEP, LAYER_STATES, ACT, GPRE, GS0, T, B, H, D,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HAS_MASK: tl.constexpr, HAS_KEEP: tl.constexpr,
    COMPUTE: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, units, row_ok, tile, at = row_tile(B, H, BLOCK_B, BLOCK_H)
    if HAS_MASK:
        mask = tl.load(MASK + at, mask=tile, other=0.0).to(COMPUTE)
    d_state = tl.load(GFINAL + at, mask=tile, other=0.0).to(COMPUTE)
    for step in range(T):
        t = T - 1 - step
        d = d_state + tl.load(GOUT + slab_at(t, B, H, rows, units), mask=tile, other=0.0).to(COMPUTE)
        if HAS_KEEP:  # no step past the end: nothing flows into it
            keep = kept(KEEP, t, B, rows, row_ok)
            d = tl.where(keep, d, 0.0)
        for down in range(D):
            layer = D - 1 - down
            act_at = slab_at(layer * T + t, B, 2 * H, rows, units)
            h = tl.load(ACT + act_at, mask=tile, other=0.0).to(COMPUTE)
            transform = tl.load(ACT + act_at + H, mask=tile, other=0.0).to(COMPUTE)
            s_layer = tl.load(LAYER_STATES + slab_at(layer * T + t, B, H, rows, units), mask=tile, other=0.0).to(COMPUTE)
            d_pre_h = d * transform * (1.0 - h * h)
            d_pre_t = d * (h - s_layer) * transform * (1.0 - transform)
            tl.store(GPRE + act_at, d_pre_h.to(GPRE.dtype.element_ty), mask=tile)
            tl.store(GPRE + act_at + H, d_pre_t.to(GPRE.dtype.element_ty), mask=tile)
            tl.debug_barrier()  # every thread's d_pre_h and d_pre_t, as stored, are what the dots read
            slab = layer * T + t
            through = recurrent_dot(
                GPRE, slab, B, 2 * H, rows, row_ok, W + (2 * layer + 0) * H * H, H, units, MASK,
                BLOCK_B, BLOCK_H, BLOCK_K, False, False, COMPUTE, PRECISION,
            )
            through += recurrent_dot(
                GPRE + H, slab, B, 2 * H, rows, row_ok, W + (2 * layer + 1) * H * H, H, units, MASK,
                BLOCK_B, BLOCK_H, BLOCK_K, False, False, COMPUTE, PRECISION,
            )
            if HAS_MASK:
                through = through * mask
            d = d * (1.0 - transform) + through
        if HAS_KEEP:
            d_state = tl.where(keep, d, d_state)
        else:
            d_state = d
    tl.store(GS0 + at, d_state.to(GS0.dtype.element_ty), mask=tile)


def forward(
    projected: Tensor, s0: Tensor, weight_hh: Tensor, bias: Tensor, state_mask: Tensor | None, keep: Tensor | None
) -> tuple[Tensor, ...]:
    steps, batch, hidden, depth = projected.shape[0], projected.shape[1], s0.shape[1], weight_hh.shape[0]
    outputs = projected.new_empty(steps, batch, hidden)
    final = s0.new_empty(batch, hidden)
    layer_states = projected.new_empty(depth, steps, batch, hidden)
    activations = projected.new_empty(depth, steps, batch, 2 * hidden)
    _forward[grid(batch)](
        projected.contiguous(), s0.contiguous(), weight_hh.contiguous(), bias.contiguous(),
        state_mask if state_mask is not None else projected.new_empty(0), keep_or_empty(keep, projected),
        outputs, final, layer_states, activations, steps, batch, hidden, depth,
        HAS_MASK=state_mask is not None,
        HAS_KEEP=keep is not None, **dense_launch(batch, hidden, projected.dtype),
    )
    return outputs, final, layer_states, activations


def backward(
    grad_outputs: Tensor, grad_final: Tensor, weight_hh: Tensor, state_mask: Tensor | None, keep: Tensor | None,
    layer_states: Tensor, activations: Tensor,
) -> tuple[Tensor, ...]:
    steps, batch, hidden = grad_outputs.shape
    depth = weight_hh.shape[0]
    grad_pre = grad_outputs.new_empty(depth, steps, batch, 2 * hidden)
    grad_s0 = grad_final.new_empty(batch, hidden)
    _backward[grid(batch)](
        grad_outputs.contiguous(), grad_final.contiguous(), weight_hh.contiguous(),
        state_mask if state_mask is not None else grad_outputs.new_empty(0), keep_or_empty(keep, grad_outputs),
        layer_states, activations, grad_pre, grad_s0, steps, batch, hidden, depth,
        HAS_MASK=state_mask is not None,
        HAS_KEEP=keep is not None, **dense_launch(batch, hidden, grad_outputs.dtype),
    )
    inputs = layer_states * state_mask if state_mask is not None else layer_states  # (D, T, B, H): what W_l saw
    grad_weight_hh = torch.bmm(grad_pre.view(depth, steps * batch, 2 * hidden).transpose(1, 2), inputs.reshape(depth, steps * batch, hidden))
    return grad_pre[0], grad_s0, grad_weight_hh.to(weight_hh.dtype), grad_pre.sum((1, 2)).to(weight_hh.dtype)
