"""The chrono initializer (Tallec & Ollivier, "Can recurrent neural networks warp time?", ICLR 2018).

For gated cells whose forget gate sets a characteristic forgetting time, initialise::

    b_f ~ log(U(1, T_max - 1))        b_i = -b_f        b_g = b_o = 0

so that the cell's time constants spread over [1, T_max], the range of dependencies the task
needs. The paper names only ``b_f`` and ``b_i``; every other gate's bias (the LSTM's candidate
``g`` and output ``o``, JANET's candidate ``c``) starts at 0, as in the original code: the Keras
Chrono-LSTM (its bias initialiser concatenates ``-b_f``, ``b_f`` and zeros, Keras' default
bias) and the JANET authors' ``chrono_init`` (van der Westhuizen & Lasenby 2018,
github.com/JosvanderWesthuizen/janet, ``aux_code/rnn_cells.py``: ``i = -f`` and ``j = o = 0``
for the LSTM, candidate ``j = 0`` for JANET). These are the *effective* biases: a cell with two
bias vectors (``torch.nn.LSTM``'s ``bias_ih`` + ``bias_hh``) gets them in the first and 0 in
the second. Works on ``torch.nn.LSTM``, ``torch.nn.LSTMCell`` and this library's gated cells
(any module declaring ``gate_order``); JANET, which has no input gate, gets ``b_f`` and
``b_c = 0``.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from rnnzoo.cells.checks import require_in_range


def chrono_forget_bias(hidden_size: int, max_timescale: float, generator: torch.Generator | None = None) -> Tensor:
    """Sample ``log(U(1, T_max - 1))`` for ``hidden_size`` units."""
    require_in_range("max_timescale", max_timescale, 2.0, float("inf"), low_open=True)
    uniform = torch.rand(hidden_size, generator=generator, dtype=torch.float64)
    return torch.log(1.0 + uniform * (max_timescale - 2.0))


def _gated_biases(module: nn.Module) -> list[tuple[Tensor, Tensor | None, str]]:
    """(main bias, second bias or None, gate order) for each gated bias set in ``module``."""
    if isinstance(module, nn.LSTM):
        suffixes = ["_reverse"] if module.bidirectional else []
        names = [f"l{layer}{suffix}" for layer in range(module.num_layers) for suffix in ["", *suffixes]]
        if not module.bias:
            return []
        return [(getattr(module, f"bias_ih_{name}"), getattr(module, f"bias_hh_{name}"), "ifgo") for name in names]
    if isinstance(module, nn.LSTMCell):
        return [] if module.bias_ih is None else [(module.bias_ih, module.bias_hh, "ifgo")]
    gate_order = getattr(module, "gate_order", None)
    if gate_order is None:
        return []
    main: Tensor | None = getattr(module, "bias_ih", None)
    if main is None:
        main = cast(Tensor, module.bias)  # a parameter: nn.Module's __getattr__ is typed Tensor | Module
    return [(main, getattr(module, "bias_hh", None), gate_order)]


@torch.no_grad()
def chrono_initialize_(module: nn.Module, max_timescale: float, generator: torch.Generator | None = None) -> nn.Module:
    """Apply chrono init in place to every gated cell inside ``module``; returns ``module``.

    Sets each cell's effective biases: forget ``log(U(1, T_max - 1))``, input its negative, every
    other gate 0. A second bias vector (``torch.nn.LSTM``'s ``bias_hh``) is zeroed whole, so the
    effective bias is exactly these values. Weights are left alone.
    """
    targets = [target for sub in module.modules() for target in _gated_biases(sub)]
    if not targets:
        raise ValueError(
            f"chrono_initialize_ found no gated cell with biases in {type(module).__name__}; it works on "
            "torch.nn.LSTM, torch.nn.LSTMCell and rnnzoo cells with a forget gate"
        )
    for main, second, gate_order in targets:
        hidden_size = main.numel() // len(gate_order)
        forget = slice(gate_order.index("f") * hidden_size, (gate_order.index("f") + 1) * hidden_size)
        forget_bias = chrono_forget_bias(hidden_size, max_timescale, generator).to(main)
        # Candidate and output gates (and any other) at 0, as in both original implementations.
        main.zero_()
        if second is not None:
            second.zero_()
        main[forget] = forget_bias
        if "i" in gate_order:
            input_gate = slice(gate_order.index("i") * hidden_size, (gate_order.index("i") + 1) * hidden_size)
            main[input_gate] = -forget_bias
    return module
