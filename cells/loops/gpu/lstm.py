"""The Phased LSTM's time loop in Triton, and with the gate always open the LSTM's (see csrc/phased_lstm.cpp):
``rnnzoo::phased_lstm_loop``, ``rnnzoo::lstm_loop`` and their backward ops on CUDA."""

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
from rnnzoo.cells.loops.ops import LSTM_SAVED

# The saved buffer's layout, as on the CPU. A kernel reads a module global only as a constexpr
# (the interpreter reads any global: only compiling for a GPU tells, test_triton_resources).
SAVED: tl.constexpr = tl.constexpr(LSTM_SAVED)


@triton.jit
def _time_gate(time, shift, inv_period, inv_ratio, leak):
    """The gate for a tile (time (BLOCK_B, 1), the rest (1, BLOCK_H)), as cells/phased_lstm.py's
    time_gate: k, 2φ/r_on and the branch (rising, falling; falling also holds where rising does).
    Both kernels call it, and the backward's derivatives take its branch."""
    cycle = (time - shift) * inv_period
    phase = cycle - tl.floor(cycle)
    opening = 2.0 * phase * inv_ratio  # 2φ/r_on: k rises with it to 1 at φ = r_on/2, falls back to 0 at r_on
    is_open = inv_ratio > 0.0  # r_on <= 0 (a learned value may cross 0): always closed, as the reference
    rising = is_open & (opening < 1.0)
    falling = is_open & (opening < 2.0)
    k = tl.where(rising, opening, tl.where(falling, 2.0 - opening, leak * phase))
    return k, opening, rising, falling


@triton.jit
def _gate_derivatives(opening, rising, falling, inv_period, inv_ratio, leak):
    """∂k/∂cycle / τ (∂φ/∂cycle = 1) and ∂k/∂r_on on the branch _time_gate took; 1/τ and 1/r_on as
    the C++ loop takes them."""
    k_by_cycle = tl.where(rising, 2.0 * inv_ratio, tl.where(falling, -2.0 * inv_ratio, leak)) * inv_period
    k_by_ratio = tl.where(rising, -opening * inv_ratio, tl.where(falling, opening * inv_ratio, 0.0))
    return k_by_cycle, k_by_ratio


@triton.jit
def _gate_dot(HS, t, B, rows, row_ok, W, gate, H, units, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, COMPUTE: tl.constexpr, PRECISION: tl.constexpr):
    """h_{t-1} @ W^T's block ``gate`` (i, f, g, o: rows gate·H of W), h_{t-1} read from HS[t]."""
    return recurrent_dot(HS, t, B, H, rows, row_ok, W + gate * H * H, H, units, W, BLOCK_B, BLOCK_H, BLOCK_K, True, False, COMPUTE, PRECISION)


@triton.jit
def _forward(
    P, H0, C0, W, TIMES, INV_PERIOD, SHIFT, INV_RATIO, KEEP, OUT, HS, CS, SAVED_, T, B, H, leak,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, GATED: tl.constexpr, HAS_KEEP: tl.constexpr,
    COMPUTE: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, units, row_ok, tile, at = row_tile(B, H, BLOCK_B, BLOCK_H)
    unit_ok = units < H
    if GATED:  # padding lanes get a harmless gate (period 1, ratio 1)
        inv_period = tl.load(INV_PERIOD + units, mask=unit_ok, other=1.0).to(COMPUTE)[None, :]
        shift = tl.load(SHIFT + units, mask=unit_ok, other=0.0).to(COMPUTE)[None, :]
        inv_ratio = tl.load(INV_RATIO + units, mask=unit_ok, other=1.0).to(COMPUTE)[None, :]
    h = tl.load(H0 + at, mask=tile, other=0.0).to(COMPUTE)
    c = tl.load(C0 + at, mask=tile, other=0.0).to(COMPUTE)
    tl.store(HS + at, h.to(HS.dtype.element_ty), mask=tile)
    tl.store(CS + at, c.to(CS.dtype.element_ty), mask=tile)
    for t in range(T):
        tl.debug_barrier()  # h_{t-1}, stored at HS[t] by every thread, is what the dots read
        gate_at = slab_at(t, B, 4 * H, rows, units)
        i = sigmoid(tl.load(P + gate_at, mask=tile, other=0.0).to(COMPUTE) + _gate_dot(HS, t, B, rows, row_ok, W, 0, H, units, BLOCK_B, BLOCK_H, BLOCK_K, COMPUTE, PRECISION))
        f = sigmoid(tl.load(P + gate_at + H, mask=tile, other=0.0).to(COMPUTE) + _gate_dot(HS, t, B, rows, row_ok, W, 1, H, units, BLOCK_B, BLOCK_H, BLOCK_K, COMPUTE, PRECISION))
        g = tanh(tl.load(P + gate_at + 2 * H, mask=tile, other=0.0).to(COMPUTE) + _gate_dot(HS, t, B, rows, row_ok, W, 2, H, units, BLOCK_B, BLOCK_H, BLOCK_K, COMPUTE, PRECISION))
        o = sigmoid(tl.load(P + gate_at + 3 * H, mask=tile, other=0.0).to(COMPUTE) + _gate_dot(HS, t, B, rows, row_ok, W, 3, H, units, BLOCK_B, BLOCK_H, BLOCK_K, COMPUTE, PRECISION))
        c_proposed = f * c + i * g
        tanh_c = tanh(c_proposed)
        save_at = slab_at(t, B, SAVED * H, rows, units)
        if GATED:
            time = tl.load(TIMES + t * B + rows, mask=row_ok, other=0.0).to(COMPUTE)[:, None]
            k, _, _, _ = _time_gate(time, shift, inv_period, inv_ratio, leak)
            h_new = k * (o * tanh_c) + (1.0 - k) * h
            c_new = k * c_proposed + (1.0 - k) * c
        else:
            h_new = o * tanh_c
            c_new = c_proposed
        out = h_new
        if HAS_KEEP:  # past a sequence's end the state stays and the output is 0
            keep = kept(KEEP, t, B, rows, row_ok)
            h_new = tl.where(keep, h_new, h)
            c_new = tl.where(keep, c_new, c)
            out = tl.where(keep, out, 0.0)
        tl.store(SAVED_ + save_at, i.to(SAVED_.dtype.element_ty), mask=tile)
        tl.store(SAVED_ + save_at + H, f.to(SAVED_.dtype.element_ty), mask=tile)
        tl.store(SAVED_ + save_at + 2 * H, g.to(SAVED_.dtype.element_ty), mask=tile)
        tl.store(SAVED_ + save_at + 3 * H, o.to(SAVED_.dtype.element_ty), mask=tile)
        tl.store(SAVED_ + save_at + 4 * H, tanh_c.to(SAVED_.dtype.element_ty), mask=tile)
        tl.store(SAVED_ + save_at + 5 * H, c_proposed.to(SAVED_.dtype.element_ty), mask=tile)
        tl.store(OUT + slab_at(t, B, H, rows, units), out.to(OUT.dtype.element_ty), mask=tile)
        tl.store(HS + slab_at(t + 1, B, H, rows, units), h_new.to(HS.dtype.element_ty), mask=tile)
        tl.store(CS + slab_at(t + 1, B, H, rows, units), c_new.to(CS.dtype.element_ty), mask=tile)
        h = h_new
        c = c_new


@triton.jit
def _backward(
    GOUT, GH, GC, W, KEEP, SAVED_, HS, CS, TIMES, INV_PERIOD, SHIFT, INV_RATIO, GPRE, GCYCLE, GRATIO, GH0, GC0, T, B, H, leak,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, GATED: tl.constexpr, HAS_KEEP: tl.constexpr,
    COMPUTE: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, units, row_ok, tile, at = row_tile(B, H, BLOCK_B, BLOCK_H)
    if GATED:  # padding lanes as in _forward
        unit_ok = units < H
        inv_period = tl.load(INV_PERIOD + units, mask=unit_ok, other=1.0).to(COMPUTE)[None, :]
        shift = tl.load(SHIFT + units, mask=unit_ok, other=0.0).to(COMPUTE)[None, :]
        inv_ratio = tl.load(INV_RATIO + units, mask=unit_ok, other=1.0).to(COMPUTE)[None, :]
    dh = tl.load(GH + at, mask=tile, other=0.0).to(COMPUTE)
    dc = tl.load(GC + at, mask=tile, other=0.0).to(COMPUTE)
    for step in range(T):
        t = T - 1 - step
        save_at = slab_at(t, B, SAVED * H, rows, units)
        i = tl.load(SAVED_ + save_at, mask=tile, other=0.0).to(COMPUTE)
        f = tl.load(SAVED_ + save_at + H, mask=tile, other=0.0).to(COMPUTE)
        g = tl.load(SAVED_ + save_at + 2 * H, mask=tile, other=0.0).to(COMPUTE)
        o = tl.load(SAVED_ + save_at + 3 * H, mask=tile, other=0.0).to(COMPUTE)
        tanh_c = tl.load(SAVED_ + save_at + 4 * H, mask=tile, other=0.0).to(COMPUTE)
        h_prev = tl.load(HS + slab_at(t, B, H, rows, units), mask=tile, other=0.0).to(COMPUTE)
        c_prev = tl.load(CS + slab_at(t, B, H, rows, units), mask=tile, other=0.0).to(COMPUTE)
        d = dh + tl.load(GOUT + slab_at(t, B, H, rows, units), mask=tile, other=0.0).to(COMPUTE)
        if GATED:
            c_proposed = tl.load(SAVED_ + save_at + 5 * H, mask=tile, other=0.0).to(COMPUTE)
            time = tl.load(TIMES + t * B + rows, mask=row_ok, other=0.0).to(COMPUTE)[:, None]
            k, opening, rising, falling = _time_gate(time, shift, inv_period, inv_ratio, leak)
            gk = d * (o * tanh_c - h_prev) + dc * (c_proposed - c_prev)
            k_by_cycle, k_by_ratio = _gate_derivatives(opening, rising, falling, inv_period, inv_ratio, leak)
            g_cycle = gk * k_by_cycle
            g_ratio = gk * k_by_ratio
        else:
            k = 1.0
        d_proposed_h = d * k
        d_proposed_c = dc * k + d_proposed_h * o * (1.0 - tanh_c * tanh_c)
        d_i = d_proposed_c * g * i * (1.0 - i)
        d_f = d_proposed_c * c_prev * f * (1.0 - f)
        d_g = d_proposed_c * i * (1.0 - g * g)
        d_o = d_proposed_h * tanh_c * o * (1.0 - o)
        new_dc = dc * (1.0 - k) + d_proposed_c * f
        direct = d * (1.0 - k)
        if HAS_KEEP:  # a step that did not happen passes its state's gradients through
            keep = kept(KEEP, t, B, rows, row_ok)
            d_i = tl.where(keep, d_i, 0.0)
            d_f = tl.where(keep, d_f, 0.0)
            d_g = tl.where(keep, d_g, 0.0)
            d_o = tl.where(keep, d_o, 0.0)
            new_dc = tl.where(keep, new_dc, dc)
            direct = tl.where(keep, direct, dh)
            if GATED:
                g_cycle = tl.where(keep, g_cycle, 0.0)
                g_ratio = tl.where(keep, g_ratio, 0.0)
        if GATED:
            tl.store(GCYCLE + slab_at(t, B, H, rows, units), g_cycle.to(GCYCLE.dtype.element_ty), mask=tile)
            tl.store(GRATIO + slab_at(t, B, H, rows, units), g_ratio.to(GRATIO.dtype.element_ty), mask=tile)
        gate_at = slab_at(t, B, 4 * H, rows, units)
        tl.store(GPRE + gate_at, d_i.to(GPRE.dtype.element_ty), mask=tile)
        tl.store(GPRE + gate_at + H, d_f.to(GPRE.dtype.element_ty), mask=tile)
        tl.store(GPRE + gate_at + 2 * H, d_g.to(GPRE.dtype.element_ty), mask=tile)
        tl.store(GPRE + gate_at + 3 * H, d_o.to(GPRE.dtype.element_ty), mask=tile)
        tl.debug_barrier()  # every thread's gate gradients, as stored, are what the dots read
        # dh_{t-1} gets dpre @ W: W's four blocks as they are.
        dh = direct
        for gate in tl.static_range(4):
            dh += recurrent_dot(
                GPRE + gate * H, t, B, 4 * H, rows, row_ok, W + gate * H * H, H, units, W,
                BLOCK_B, BLOCK_H, BLOCK_K, False, False, COMPUTE, PRECISION,
            )
        dc = new_dc
    tl.store(GH0 + at, dh.to(GH0.dtype.element_ty), mask=tile)
    tl.store(GC0 + at, dc.to(GC0.dtype.element_ty), mask=tile)


def _reciprocals(period: Tensor, ratio_on: Tensor) -> tuple[Tensor, Tensor]:
    """1/τ and 1/r_on as the kernels take them, as the C++ loop does (the same roundings), in at least
    float32: a bfloat16 or float16 reciprocal would round the gate's phase a second time. 1/r_on is 0
    where r_on <= 0 (a closed unit), not ±inf, as in the C++ loop."""
    compute = torch.promote_types(period.dtype, torch.float32)
    ratio = ratio_on.to(compute)
    return period.to(compute).reciprocal().contiguous(), torch.where(ratio > 0, ratio.reciprocal(), 0.0).contiguous()


def _run_forward(projected, h0, c0, weight_hh, gate, keep, leak):
    steps, batch, hidden = projected.shape[0], projected.shape[1], h0.shape[1]
    outputs = projected.new_empty(steps, batch, hidden)
    saved = projected.new_zeros(steps, batch, LSTM_SAVED * hidden)  # zeros: every value defined
    hs = projected.new_empty(steps + 1, batch, hidden)
    cs = projected.new_empty(steps + 1, batch, hidden)
    times, period, shift, ratio_on = gate if gate is not None else (projected,) * 4  # unread when not GATED
    inv_period, inv_ratio_on = _reciprocals(period, ratio_on) if gate is not None else (projected, projected)
    _forward[grid(batch)](
        projected.contiguous(), h0.contiguous(), c0.contiguous(), weight_hh.contiguous(), times.contiguous(), inv_period,
        shift.contiguous(), inv_ratio_on, keep_or_empty(keep, projected),
        outputs, hs, cs, saved, steps, batch, hidden, leak,
        GATED=gate is not None,
        HAS_KEEP=keep is not None, **dense_launch(batch, hidden, projected.dtype),
    )
    return outputs, hs[steps].clone(), cs[steps].clone(), saved, hs, cs


def _run_backward(grad_outputs, grad_h, grad_c, weight_hh, gate, keep, saved, hs, cs):
    """``gate``: the Phased LSTM's (timestamps, τ, s, r_on, α), None for the LSTM."""
    steps, batch, hidden = grad_outputs.shape
    grad_pre = grad_outputs.new_empty(steps, batch, 4 * hidden)
    gated = gate is not None
    grad_cycle = grad_outputs.new_empty(steps, batch, hidden) if gated else grad_outputs  # unwritten when not
    grad_ratio = grad_outputs.new_empty(steps, batch, hidden) if gated else grad_outputs
    times, period, shift, ratio_on, leak = gate if gated else (grad_outputs,) * 4 + (0.0,)  # unread when not
    inv_period, inv_ratio_on = _reciprocals(period, ratio_on) if gated else (grad_outputs, grad_outputs)
    grad_h0, grad_c0 = grad_h.new_empty(batch, hidden), grad_c.new_empty(batch, hidden)
    _backward[grid(batch)](
        grad_outputs.contiguous(), grad_h.contiguous(), grad_c.contiguous(), weight_hh.contiguous(),
        keep_or_empty(keep, grad_outputs), saved, hs, cs, times.contiguous(), inv_period, shift.contiguous(), inv_ratio_on,
        grad_pre, grad_cycle, grad_ratio, grad_h0, grad_c0, steps, batch, hidden, leak,
        GATED=gated,
        HAS_KEEP=keep is not None, **dense_launch(batch, hidden, grad_outputs.dtype),
    )
    grad_weight_hh = (grad_pre.view(steps * batch, 4 * hidden).t() @ hs[:steps].reshape(steps * batch, hidden)).to(weight_hh.dtype)
    return grad_pre, grad_h0, grad_c0, grad_weight_hh, grad_cycle, grad_ratio


def phased_forward(projected, h0, c0, weight_hh, times, period, shift, ratio_on, keep, leak):
    return _run_forward(projected, h0, c0, weight_hh, (times, period, shift, ratio_on), keep, leak)


def phased_backward(
    grad_outputs, grad_h, grad_c, weight_hh, keep, saved, hs, cs, times, period, shift, ratio_on, leak
) -> list[Tensor]:
    grad_pre, grad_h0, grad_c0, grad_weight_hh, grad_cycle, grad_ratio = _run_backward(
        grad_outputs, grad_h, grad_c, weight_hh, (times, period, shift, ratio_on, leak), keep, saved, hs, cs
    )
    # cycle = (t - s) / τ: ∂/∂t = 1/τ, ∂/∂s = -1/τ, ∂/∂τ = -cycle/τ (grad_cycle holds dL/dcycle / τ), so
    # dL/dτ = -(Σ grad_cycle · t - s Σ grad_cycle) / τ, without a (T, B, H) tensor of cycles.
    # Padded steps' timestamps are masked: their grad_cycle is 0, and 0 · NaN would not be.
    compute = torch.promote_types(grad_cycle.dtype, torch.float32)
    step_times = times.to(compute) if keep is None else times.to(compute).masked_fill(~keep, 0.0)
    by_unit = grad_cycle.to(compute).sum((0, 1))
    by_time = torch.einsum("tbh,tb->h", grad_cycle.to(compute), step_times)
    grad_period = -(by_time - shift.to(compute) * by_unit) * _reciprocals(period, ratio_on)[0]
    # The timestamps' and the gate's gradients in their own dtypes (float32 in a bfloat16 loop), summed in float32 at least.
    return [
        grad_pre, grad_h0, grad_c0, grad_weight_hh, grad_cycle.to(compute).sum(-1).to(times.dtype),
        grad_period.to(period.dtype), (-grad_cycle.to(compute).sum((0, 1))).to(shift.dtype),
        grad_ratio.to(compute).sum((0, 1)).to(ratio_on.dtype),
    ]


def lstm_forward(projected, h0, c0, weight_hh, keep):
    return _run_forward(projected, h0, c0, weight_hh, None, keep, 0.0)


def lstm_backward(grad_outputs, grad_h, grad_c, weight_hh, keep, saved, hs, cs):
    return _run_backward(grad_outputs, grad_h, grad_c, weight_hh, None, keep, saved, hs, cs)[:4]
