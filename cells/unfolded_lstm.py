"""The LSTM unfolded into a deep feed-forward network, with untied weights.

The study reads an LSTM run for ``L`` steps as an ``L``-layer feed-forward network acting on one
input vector, then unties the weights so that each "step" becomes a layer of its own. With
``h_0 = c_0 = 0`` and the input entering the first layer only::

    layer 1:        z_1 = W x + b_1
    layer l = 2..L: z_l = U_l h_{l-1} + b_l
    (i, f, g, o) = split(BN_z,l(z_l))      BN optional (``batch_norm``), identity otherwise
    c_l = σ(f) ⊙ c_{l-1} + σ(i) ⊙ tanh(g)
    h_l = σ(o) ⊙ tanh(BN_c,l(c_l))

``tied=True`` shares ``U, b`` across layers 2..L (the recurrent network itself); each layer
keeps its own batch-norm statistics, as in recurrent batch normalization (Cooijmans et al.,
2017), whose gain init of 0.1 is used. Dropout (``dropout``) applies to ``h_l`` between layers.
Weights start orthogonal, one block per gate. The network has exactly ``depth`` layers (the
original code built one fewer), and ``layers[l]`` holds layer l's parameters so gradient norms
can be logged per layer. It classifies a vector: there is no time axis.

No paper: the study is a hypothesis of the seed repository (an LSTM unrolled over depth is a
deep network whose gates keep gradients alive), tested in ``rnnzoo reproduce unfolded_lstm``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnzoo.cells.checks import require_bool, require_positive_int, require_rate
from rnnzoo.cells.lstm import LSTMState

# Recurrent batch norm's gain init: small, so sigmoids and tanh start in their linear range.
BATCH_NORM_GAIN = 0.1


def _batch_norm(features: int) -> nn.BatchNorm1d:
    norm = nn.BatchNorm1d(features)
    nn.init.constant_(norm.weight, BATCH_NORM_GAIN)
    return norm


class UnfoldedLSTMLayer(nn.Module):
    """One unfolded step: a linear map to the four gates, optional batch norms, the LSTM update."""

    def __init__(self, linear: nn.Linear, hidden_size: int, batch_norm: bool) -> None:
        super().__init__()
        self.linear = linear
        self.gate_norm = _batch_norm(4 * hidden_size) if batch_norm else nn.Identity()
        self.cell_norm = _batch_norm(hidden_size) if batch_norm else nn.Identity()

    def forward(self, layer_input: Tensor, state: LSTMState) -> LSTMState:
        i, f, g, o = self.gate_norm(self.linear(layer_input)).chunk(4, dim=-1)  # (B, H) each
        c = torch.sigmoid(f) * state.c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.cell_norm(c))
        return LSTMState(h, c)


def _orthogonal_linear(in_features: int, hidden_size: int) -> nn.Linear:
    linear = nn.Linear(in_features, 4 * hidden_size)
    for block in linear.weight.data.chunk(4):
        nn.init.orthogonal_(block)
    nn.init.zeros_(linear.bias)
    return linear


class UnfoldedLSTM(nn.Module):
    """``depth`` LSTM steps as layers over one vector ``(B, I) -> (B, H)``."""

    state_type = LSTMState
    takes_time = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        depth: int = 4,
        tied: bool = False,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_size = require_positive_int("input_size", input_size)
        self.hidden_size = require_positive_int("hidden_size", hidden_size)
        self.depth = require_positive_int("depth", depth)
        self.tied = require_bool("tied", tied)
        require_bool("batch_norm", batch_norm)
        self.dropout = require_rate("dropout", dropout)
        shared = _orthogonal_linear(hidden_size, hidden_size) if tied else None
        linears = [_orthogonal_linear(input_size, hidden_size)]
        linears += [shared or _orthogonal_linear(hidden_size, hidden_size) for _ in range(depth - 1)]
        self.layers = nn.ModuleList(UnfoldedLSTMLayer(linear, hidden_size, batch_norm) for linear in linears)

    def forward(self, x: Tensor) -> tuple[Tensor, LSTMState]:
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"unfolded_lstm classifies vectors: input must have shape (batch, {self.input_size}), got {tuple(x.shape)}")
        zeros = x.new_zeros(x.shape[0], self.hidden_size)
        state = LSTMState(zeros, zeros)
        layer_input = x
        for index, layer in enumerate(self.layers):
            if index > 0:
                layer_input = F.dropout(state.h, self.dropout, self.training)
            state = layer(layer_input, state)
        return state.h, state

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, depth={self.depth}, tied={self.tied}, dropout={self.dropout}"
