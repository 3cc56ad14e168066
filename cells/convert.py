"""Weights to and from ``torch.nn.LSTM``: the same layout, so conversion is an exact copy."""

from __future__ import annotations

import torch
from torch import nn

from rnnzoo.cells.layer import RecurrentLayer
from rnnzoo.cells.lstm import LSTMCell

_FIELDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _torch_names(module: nn.LSTM) -> list[str]:
    suffixes = ["", "_reverse"] if module.bidirectional else [""]
    return [f"l{layer}{suffix}" for layer in range(module.num_layers) for suffix in suffixes]


@torch.no_grad()
def to_torch_lstm(layer: RecurrentLayer) -> nn.LSTM:
    """A ``torch.nn.LSTM`` computing exactly what ``layer`` (of LSTM cells) computes."""
    if not issubclass(layer.cell_type, LSTMCell) or layer.takes_time:
        raise ValueError(f"only layers of LSTM cells convert to torch.nn.LSTM, got {layer.cell_type.__name__}")
    first = layer.cells[0].weight_ih
    module = nn.LSTM(
        layer.input_size, layer.hidden_size, num_layers=layer.num_layers, dropout=layer.dropout,
        bidirectional=layer.bidirectional, batch_first=layer.batch_first, device=first.device, dtype=first.dtype,
    )
    for name, cell in zip(_torch_names(module), layer.cells):
        for field in _FIELDS:
            getattr(module, f"{field}_{name}").copy_(getattr(cell, field))
    return module


@torch.no_grad()
def from_torch_lstm(module: nn.LSTM) -> RecurrentLayer:
    """An rnnzoo ``lstm`` layer with ``module``'s weights (no projections, biases required)."""
    if module.proj_size or not module.bias:
        raise ValueError("only torch.nn.LSTM with bias=True and proj_size=0 converts to an rnnzoo layer")
    layer = RecurrentLayer(
        LSTMCell, module.input_size, module.hidden_size, num_layers=module.num_layers, dropout=module.dropout,
        bidirectional=module.bidirectional, batch_first=module.batch_first,
    ).to(device=module.all_weights[0][0].device, dtype=module.all_weights[0][0].dtype)  # before copying: no rounding
    for name, cell in zip(_torch_names(module), layer.cells):
        for field in _FIELDS:
            getattr(cell, field).copy_(getattr(module, f"{field}_{name}"))
    return layer
