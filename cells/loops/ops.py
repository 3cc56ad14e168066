"""The fused time loops as ``torch.library`` ops: schemas, fake implementations, autograd.

Every loop is time-major and contiguous: ``projected`` ``(T, B, G)`` is the cell's input
projection of every step (``RecurrentCell.project_input``), ``keep`` ``(T, B)`` bool says which
steps lie inside their sequence (``None``: all). Where ``keep`` is False the state stays and
the output is zero, as in ``cells.layer._masked_step``. Each forward op returns ``(outputs
(T, B, H), final state field(s) (B, H), *saved)``; ``saved`` holds the activations and states
its ``_backward`` op reads, so backpropagation through time recomputes nothing.

The CPU kernels are C++ (``csrc/``, built by ``cells.loops.native``). The ops are defined here
whether or not the kernels were built, so ``torch.compile`` traces them through their fake
implementations. The backward ops are not differentiable themselves (no double backward).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

LIBRARY = torch.library.Library("rnnzoo", "FRAGMENT")
# The ops' version, part of every name (``rnnzoo::janet_loop_v5``; the C++ build gets it as
# RNNZOO_OPS_VERSION). Bump it whenever an op's outputs change (a saved buffer's layout, an
# argument's meaning): torch.compile's on-disk graph cache keys on op names, and would otherwise
# replay code compiled for the old layout.
VERSION = 5


def versioned(name: str) -> str:
    """``janet_loop`` -> ``janet_loop_v5``: the registered name."""
    return f"{name}_v{VERSION}"


def op(name: str) -> Any:
    """The op ``rnnzoo::<name>`` of this version, e.g. ``op("janet_loop")(projected, c0, ...)``."""
    return getattr(torch.ops.rnnzoo, versioned(name))


def _qualified(name: str) -> str:
    return f"rnnzoo::{versioned(name)}"


def _define(name: str, forward: str, backward: str) -> None:
    torch.library.define(_qualified(name), forward, lib=LIBRARY)
    torch.library.define(_qualified(f"{name}_backward"), backward, lib=LIBRARY)


def _no_double_backward() -> None:
    # A backward that autograd cannot see through would hand create_graph=True callers (gradient
    # penalties, meta-learning) silently wrong second derivatives: refuse instead.
    if torch.is_grad_enabled():
        raise RuntimeError(
            "the fused time loops have no double backward (create_graph=True); build the layer with "
            "fused=False for higher-order gradients"
        )


def _grad(grad: Tensor | None, like: Tensor) -> Tensor:
    """An output's incoming gradient; autograd passes None for outputs the loss does not use."""
    return torch.zeros_like(like) if grad is None else grad.contiguous()


def _empty(like: Tensor, *shape: Any) -> Tensor:
    return like.new_empty(shape)


# --- JANET: state c; saved σ(s), σ(s - β), tanh(ĉ) (T, B, 3H) and c before every step (T+1, B, H).
_define(
    "janet_loop",
    "(Tensor projected, Tensor c0, Tensor weight_hh, Tensor? keep, float shift) -> (Tensor, Tensor, Tensor, Tensor)",
    "(Tensor grad_outputs, Tensor grad_final, Tensor weight_hh, Tensor? keep, Tensor activations, Tensor states)"
    " -> (Tensor, Tensor, Tensor)",
)


@torch.library.register_fake(_qualified("janet_loop"), lib=LIBRARY)
def _janet_fake(projected: Tensor, c0: Tensor, weight_hh: Tensor, keep: Tensor | None, shift: float) -> tuple[Tensor, ...]:
    steps, batch, hidden = projected.shape[0], projected.shape[1], c0.shape[1]
    return (
        _empty(projected, steps, batch, hidden),
        _empty(c0, batch, hidden),
        _empty(projected, steps, batch, 3 * hidden),
        _empty(projected, steps + 1, batch, hidden),
    )


@torch.library.register_fake(_qualified("janet_loop_backward"), lib=LIBRARY)
def _janet_backward_fake(grad_outputs: Tensor, grad_final: Tensor, weight_hh: Tensor, *_: Any) -> tuple[Tensor, ...]:
    steps, batch, hidden = grad_outputs.shape
    return _empty(grad_outputs, steps, batch, 2 * hidden), torch.empty_like(grad_final), torch.empty_like(weight_hh)


def _janet_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    _, _, weight_hh, keep, _ = inputs
    outputs, final, activations, states = output
    ctx.save_for_backward(weight_hh, keep, activations, states, outputs, final)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the saved outputs
    ctx.mark_non_differentiable(activations, states)


def _janet_backward(ctx: Any, grad_outputs: Tensor | None, grad_final: Tensor | None, *_: Any) -> tuple[Tensor | None, ...]:
    _no_double_backward()
    weight_hh, keep, activations, states, outputs, final = ctx.saved_tensors
    grad_projected, grad_c0, grad_weight_hh = op("janet_loop_backward")(
        _grad(grad_outputs, outputs), _grad(grad_final, final), weight_hh, keep, activations, states
    )
    return grad_projected, grad_c0, grad_weight_hh, None, None


torch.library.register_autograd(_qualified("janet_loop"), _janet_backward, setup_context=_janet_setup, lib=LIBRARY)


# --- IndRNN: state h; saved h before every step (T+1, B, H); the outputs give the activations.
_define(
    "indrnn_loop",
    "(Tensor projected, Tensor h0, Tensor recurrent_weight, Tensor? keep, bool relu) -> (Tensor, Tensor, Tensor)",
    "(Tensor grad_outputs, Tensor grad_final, Tensor recurrent_weight, Tensor? keep, bool relu, Tensor outputs,"
    " Tensor states) -> (Tensor, Tensor, Tensor)",
)


@torch.library.register_fake(_qualified("indrnn_loop"), lib=LIBRARY)
def _indrnn_fake(projected: Tensor, h0: Tensor, recurrent_weight: Tensor, keep: Tensor | None, relu: bool) -> tuple[Tensor, ...]:
    steps, batch, hidden = projected.shape[0], projected.shape[1], h0.shape[1]
    return _empty(projected, steps, batch, hidden), _empty(h0, batch, hidden), _empty(projected, steps + 1, batch, hidden)


@torch.library.register_fake(_qualified("indrnn_loop_backward"), lib=LIBRARY)
def _indrnn_backward_fake(grad_outputs: Tensor, grad_final: Tensor, recurrent_weight: Tensor, *_: Any) -> tuple[Tensor, ...]:
    return torch.empty_like(grad_outputs), torch.empty_like(grad_final), torch.empty_like(recurrent_weight)


def _indrnn_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    _, _, recurrent_weight, keep, ctx.relu = inputs
    outputs, final, states = output
    ctx.save_for_backward(recurrent_weight, keep, outputs, states, final)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the saved outputs
    ctx.mark_non_differentiable(states)


def _indrnn_backward(ctx: Any, grad_outputs: Tensor | None, grad_final: Tensor | None, *_: Any) -> tuple[Tensor | None, ...]:
    _no_double_backward()
    recurrent_weight, keep, outputs, states, final = ctx.saved_tensors
    grad_projected, grad_h0, grad_weight = op("indrnn_loop_backward")(
        _grad(grad_outputs, outputs), _grad(grad_final, final), recurrent_weight, keep, ctx.relu, outputs, states
    )
    return grad_projected, grad_h0, grad_weight, None, None


torch.library.register_autograd(_qualified("indrnn_loop"), _indrnn_backward, setup_context=_indrnn_setup, lib=LIBRARY)


# --- LSTM: the Phased LSTM's loop with the gate always open (csrc/phased_lstm.cpp); eager runs use
# torch.nn.LSTM's kernel instead, which torch.compile cannot trace (cells.layer).
_define(
    "lstm_loop",
    "(Tensor projected, Tensor h0, Tensor c0, Tensor weight_hh, Tensor? keep) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "(Tensor grad_outputs, Tensor grad_h, Tensor grad_c, Tensor weight_hh, Tensor? keep, Tensor saved, Tensor hs, Tensor cs)"
    " -> (Tensor, Tensor, Tensor, Tensor)",
)


# Values saved per unit and step by both LSTM loops: σ(i), σ(f), tanh(g), σ(o), tanh(c̃), c̃ (the
# Phased LSTM's backward op recomputes its gate k and cycle (t - s)/τ from the timestamps).
LSTM_SAVED = 6


def _lstm_outputs(projected: Tensor, h0: Tensor, c0: Tensor, saved: int) -> tuple[Tensor, ...]:
    """Both LSTM loops' outputs: outputs, h, c, saved (T, B, saved·H), hs, cs."""
    steps, batch, hidden = projected.shape[0], projected.shape[1], h0.shape[1]
    return (
        _empty(projected, steps, batch, hidden),
        _empty(h0, batch, hidden),
        _empty(c0, batch, hidden),
        _empty(projected, steps, batch, saved * hidden),
        _empty(projected, steps + 1, batch, hidden),
        _empty(projected, steps + 1, batch, hidden),
    )


@torch.library.register_fake(_qualified("lstm_loop"), lib=LIBRARY)
def _lstm_fake(projected: Tensor, h0: Tensor, c0: Tensor, *_: Any) -> tuple[Tensor, ...]:
    return _lstm_outputs(projected, h0, c0, LSTM_SAVED)


@torch.library.register_fake(_qualified("lstm_loop_backward"), lib=LIBRARY)
def _lstm_backward_fake(grad_outputs: Tensor, grad_h: Tensor, grad_c: Tensor, weight_hh: Tensor, *_: Any) -> tuple[Tensor, ...]:
    steps, batch, hidden = grad_outputs.shape
    return _empty(grad_outputs, steps, batch, 4 * hidden), torch.empty_like(grad_h), torch.empty_like(grad_c), torch.empty_like(weight_hh)


def _save_lstm(ctx: Any, weight_hh: Tensor, keep: Tensor | None, output: tuple[Tensor, ...], *gate: Tensor) -> None:
    """What both LSTM loops' backward ops read (``gate``: the Phased LSTM's timestamps, τ, s and r_on)."""
    outputs, h, c, saved, hs, cs = output
    ctx.save_for_backward(weight_hh, keep, saved, hs, cs, outputs, h, c, *gate)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the saved outputs
    ctx.mark_non_differentiable(saved, hs, cs)


def _lstm_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    _save_lstm(ctx, weight_hh=inputs[3], keep=inputs[4], output=output)


def _lstm_backward(ctx: Any, grad_outputs: Tensor | None, grad_h: Tensor | None, grad_c: Tensor | None, *_: Any) -> tuple[Tensor | None, ...]:
    _no_double_backward()
    weight_hh, keep, saved, hs, cs, outputs, h, c = ctx.saved_tensors
    grad_projected, grad_h0, grad_c0, grad_weight = op("lstm_loop_backward")(
        _grad(grad_outputs, outputs), _grad(grad_h, h), _grad(grad_c, c), weight_hh, keep, saved, hs, cs
    )
    return grad_projected, grad_h0, grad_c0, grad_weight, None


torch.library.register_autograd(_qualified("lstm_loop"), _lstm_backward, setup_context=_lstm_setup, lib=LIBRARY)


# --- Phased LSTM: state (h, c); the time gate is computed in the loop (see csrc/phased_lstm.cpp);
# saved as the LSTM's, σ(i), σ(f), tanh(g), σ(o), tanh(c̃), c̃ (T, B, 6H), and h, c before every
# step; the backward op recomputes the gate and its derivatives from the timestamps, τ, s, r_on and α.
_define(
    "phased_lstm_loop",
    "(Tensor projected, Tensor h0, Tensor c0, Tensor weight_hh, Tensor times, Tensor period, Tensor shift,"
    " Tensor ratio_on, Tensor? keep, float leak) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "(Tensor grad_outputs, Tensor grad_h, Tensor grad_c, Tensor weight_hh, Tensor? keep, Tensor saved, Tensor hs, Tensor cs,"
    " Tensor times, Tensor period, Tensor shift, Tensor ratio_on, float leak) -> Tensor[]",
)


@torch.library.register_fake(_qualified("phased_lstm_loop"), lib=LIBRARY)
def _phased_fake(projected: Tensor, h0: Tensor, c0: Tensor, *_: Any) -> tuple[Tensor, ...]:
    return _lstm_outputs(projected, h0, c0, LSTM_SAVED)


@torch.library.register_fake(_qualified("phased_lstm_loop_backward"), lib=LIBRARY)
def _phased_backward_fake(
    grad_outputs: Tensor, grad_h: Tensor, grad_c: Tensor, weight_hh: Tensor, keep: Any, saved: Tensor, hs: Tensor, cs: Tensor,
    times: Tensor, period: Tensor, shift: Tensor, ratio_on: Tensor, leak: float,
) -> list[Tensor]:
    # The timestamps' and the gate's gradients in their own dtypes (float32 in a CUDA bfloat16 loop).
    steps, batch, hidden = grad_outputs.shape
    gate = [_empty(parameter, hidden) for parameter in (period, shift, ratio_on)]
    return [*_lstm_backward_fake(grad_outputs, grad_h, grad_c, weight_hh), _empty(times, steps, batch), *gate]


def _phased_backward(
    ctx: Any, grad_outputs: Tensor | None, grad_h: Tensor | None, grad_c: Tensor | None, *_: Any
) -> tuple[Tensor | None, ...]:
    _no_double_backward()
    weight_hh, keep, saved, hs, cs, outputs, h, c, times, period, shift, ratio_on = ctx.saved_tensors
    grads = op("phased_lstm_loop_backward")(
        _grad(grad_outputs, outputs), _grad(grad_h, h), _grad(grad_c, c), weight_hh, keep, saved, hs, cs,
        times, period, shift, ratio_on, ctx.leak,
    )
    # projected, h0, c0, weight_hh, times, period, shift, ratio_on; none for keep and leak.
    return (*grads, None, None)


def _phased_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    _save_lstm(ctx, inputs[3], inputs[8], output, *inputs[4:8])  # weight_hh, keep; times, period, shift, ratio_on
    ctx.leak = inputs[9]


torch.library.register_autograd(_qualified("phased_lstm_loop"), _phased_backward, setup_context=_phased_setup, lib=LIBRARY)


# --- RHN: state s; saved, layer-major, each micro-layer's input state (D, T, B, H) and its
# tanh(pre_h), σ(pre_t) (D, T, B, 2H). The state-dropout mask (B, H) is a constant of the sequence.
_define(
    "rhn_loop",
    "(Tensor projected, Tensor s0, Tensor weight_hh, Tensor bias, Tensor? state_mask, Tensor? keep)"
    " -> (Tensor, Tensor, Tensor, Tensor)",
    "(Tensor grad_outputs, Tensor grad_final, Tensor weight_hh, Tensor? state_mask, Tensor? keep, Tensor layer_states,"
    " Tensor activations) -> (Tensor, Tensor, Tensor, Tensor)",
)


@torch.library.register_fake(_qualified("rhn_loop"), lib=LIBRARY)
def _rhn_fake(
    projected: Tensor, s0: Tensor, weight_hh: Tensor, bias: Tensor, state_mask: Tensor | None, keep: Tensor | None
) -> tuple[Tensor, ...]:
    steps, batch, hidden, depth = projected.shape[0], projected.shape[1], s0.shape[1], weight_hh.shape[0]
    return (
        _empty(projected, steps, batch, hidden),
        _empty(s0, batch, hidden),
        _empty(projected, depth, steps, batch, hidden),
        _empty(projected, depth, steps, batch, 2 * hidden),
    )


@torch.library.register_fake(_qualified("rhn_loop_backward"), lib=LIBRARY)
def _rhn_backward_fake(grad_outputs: Tensor, grad_final: Tensor, weight_hh: Tensor, *_: Any) -> tuple[Tensor, ...]:
    steps, batch, hidden = grad_outputs.shape
    depth = weight_hh.shape[0]
    return (
        _empty(grad_outputs, steps, batch, 2 * hidden),
        torch.empty_like(grad_final),
        torch.empty_like(weight_hh),
        _empty(grad_outputs, depth, 2 * hidden),
    )


def _rhn_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    _, _, weight_hh, _, state_mask, keep = inputs
    outputs, final, layer_states, activations = output
    ctx.save_for_backward(weight_hh, state_mask, keep, layer_states, activations, outputs, final)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the saved outputs
    ctx.mark_non_differentiable(layer_states, activations)


def _rhn_backward(ctx: Any, grad_outputs: Tensor | None, grad_final: Tensor | None, *_: Any) -> tuple[Tensor | None, ...]:
    _no_double_backward()
    weight_hh, state_mask, keep, layer_states, activations, outputs, final = ctx.saved_tensors
    grad_projected, grad_s0, grad_weight, grad_bias = op("rhn_loop_backward")(
        _grad(grad_outputs, outputs), _grad(grad_final, final), weight_hh, state_mask, keep, layer_states, activations
    )
    return grad_projected, grad_s0, grad_weight, grad_bias, None, None


torch.library.register_autograd(_qualified("rhn_loop"), _rhn_backward, setup_context=_rhn_setup, lib=LIBRARY)
