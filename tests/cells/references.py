"""Independent reference steps for the cells' tests.

Each function is the paper's equation written out with plain torch ops on the module's
parameters; none calls the library's own helpers (``lstm_pointwise``, ``project_input``,
``recurrent_step``, ``time_gate``...), so a bug there cannot hide in the reference too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call


def sigmoid(x: Tensor) -> Tensor:
    # Written out rather than torch.sigmoid, to keep the reference a separate computation.
    return 1.0 / (1.0 + torch.exp(-x))


def affine(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias, for x ``(B, I)`` and weight ``(G, I)``."""
    out = x @ weight.t()
    return out if bias is None else out + bias


def lstm_step(x: Tensor, h: Tensor, c: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor) -> tuple[Tensor, Tensor]:
    """Hochreiter & Schmidhuber / Gers: gate order i, f, g, o as in torch.nn.LSTM."""
    hidden = h.shape[1]

    def pre(k: int) -> Tensor:
        rows = slice(k * hidden, (k + 1) * hidden)
        return x @ weight_ih[rows].t() + h @ weight_hh[rows].t() + bias_ih[rows] + bias_hh[rows]

    i = sigmoid(pre(0))
    f = sigmoid(pre(1))
    g = torch.tanh(pre(2))
    o = sigmoid(pre(3))
    c_next = f * c + i * g
    h_next = o * torch.tanh(c_next)
    return h_next, c_next


def lstm_cell_step(cell: nn.Module, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    return lstm_step(x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)


def janet_step(cell: nn.Module, x: Tensor, c: Tensor, shift: float) -> Tensor:
    """c_t = σ(s)⊙c + (1-σ(s-β))⊙tanh(ĉ); rows [0:H] forget, [H:2H] candidate."""
    hidden = c.shape[1]
    f_rows, c_rows = slice(0, hidden), slice(hidden, 2 * hidden)
    s = x @ cell.weight_ih[f_rows].t() + c @ cell.weight_hh[f_rows].t() + cell.bias[f_rows]
    cand = x @ cell.weight_ih[c_rows].t() + c @ cell.weight_hh[c_rows].t() + cell.bias[c_rows]
    return sigmoid(s) * c + (1.0 - sigmoid(s - shift)) * torch.tanh(cand)


def janet_original_step(cell: nn.Module, x: Tensor, c: Tensor) -> Tensor:
    """JANET without the shift (van der Westhuizen & Lasenby eq. 5): coupled gates."""
    hidden = c.shape[1]
    s = affine(x, cell.weight_ih[:hidden]) + affine(c, cell.weight_hh[:hidden]) + cell.bias[:hidden]
    cand = affine(x, cell.weight_ih[hidden:]) + affine(c, cell.weight_hh[hidden:]) + cell.bias[hidden:]
    forget = sigmoid(s)
    return forget * c + (1.0 - forget) * torch.tanh(cand)


def indrnn_step(x: Tensor, h: Tensor, weight_ih: Tensor, u: Tensor, bias: Tensor, activation: str = "relu") -> Tensor:
    pre = x @ weight_ih.t() + u * h + bias
    if activation == "relu":
        return torch.clamp(pre, min=0.0)
    return torch.tanh(pre)


def phased_time_gate(time: Tensor, period: Tensor, shift: Tensor, ratio_on: Tensor, leak: float) -> Tensor:
    """k_t of Neil et al. (2016) eq. 5, with torch.remainder for the mod; ``(B,) -> (B, H)``."""
    phase = torch.remainder(time[:, None] - shift[None, :], period[None, :]) / period[None, :]
    rising = 2.0 * phase / ratio_on
    falling = 2.0 - 2.0 * phase / ratio_on
    closed = leak * phase
    k = closed.clone()
    k = torch.where(phase < ratio_on, falling, k)
    k = torch.where(phase < ratio_on / 2.0, rising, k)
    return k


def phased_lstm_step(cell: nn.Module, x: Tensor, h: Tensor, c: Tensor, time: Tensor) -> tuple[Tensor, Tensor]:
    h_prop, c_prop = lstm_cell_step(cell, x, h, c)
    leak = cell.leak if cell.training else 0.0
    k = phased_time_gate(time, cell.period, cell.shift, cell.ratio_on, leak)
    return k * h_prop + (1.0 - k) * h, k * c_prop + (1.0 - k) * c


def rhn_step(cell: nn.Module, x: Tensor, s: Tensor) -> Tensor:
    """Zilly et al. 2017 eq. 7-9, one loop iteration per micro-layer; rows [0:H] H, [H:2H] T."""
    hidden = s.shape[1]
    w_h, w_t = cell.weight_ih[:hidden], cell.weight_ih[hidden:]
    for layer in range(cell.depth):
        r_h, r_t = cell.weight_hh[layer, :hidden], cell.weight_hh[layer, hidden:]
        b_h, b_t = cell.bias[layer, :hidden], cell.bias[layer, hidden:]
        x_h = affine(x, w_h) if layer == 0 else 0.0
        x_t = affine(x, w_t) if layer == 0 else 0.0
        h = torch.tanh(x_h + affine(s, r_h) + b_h)
        t = sigmoid(x_t + affine(s, r_t) + b_t)
        s = h * t + s * (1.0 - t)
    return s


def randomize_(module: nn.Module, scale: float = 0.5) -> nn.Module:
    """Overwrite every parameter with N(0, scale²) so no gate block is left at a special init."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, scale)
    return module


class _Runner(nn.Module):
    def __init__(self, module: nn.Module, step) -> None:
        super().__init__()
        self.module = module
        self.step = step

    def forward(self, *inputs: Tensor):
        return self.step(self.module, *inputs)


def with_params(module: nn.Module, names: list[str], step):
    """Wrap ``step(module, *inputs)`` so that gradcheck can also differentiate parameters.

    Returns ``fn(*inputs, *params)``: ``step`` run with ``module``'s parameters ``names``
    replaced by the trailing arguments (``torch.func.functional_call``).
    """
    runner = _Runner(module, step)

    def fn(*args: Tensor):
        n_inputs = len(args) - len(names)
        params = {f"module.{name}": value for name, value in zip(names, args[n_inputs:])}
        return functional_call(runner, params, args[:n_inputs])

    return fn


def gradcheck_cell(module: nn.Module, step, inputs: list[Tensor], names: list[str] | None = None) -> bool:
    """gradcheck of ``step(module, *inputs)`` wrt the inputs and the parameters ``names`` (all by default)."""
    names = [name for name, _ in module.named_parameters()] if names is None else names
    params = dict(module.named_parameters())
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    leaves += [params[name].detach().clone().requires_grad_(True) for name in names]
    return torch.autograd.gradcheck(with_params(module, names, step), tuple(leaves), eps=1e-6, atol=1e-5, rtol=1e-4)
