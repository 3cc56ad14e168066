"""Feed-forward baselines for the vector tasks: an MLP and a small CNN (``cell: mlp``, ``cell: cnn``).

The unfolded-LSTM study reads an LSTM run for ``depth`` steps as a ``depth``-layer network on one
vector (``cells.unfolded_lstm``) and compares it with "an MLP of the same depth and width" and
"a small CNN". These are those two, built like any other model (``pipeline.model.build_model``
wraps them in ``VectorModel``: network, then a linear classifier) and checked like any cell's
options in ``pipeline.config``. They are not recurrent cells, so they live here, not in ``cells``.

    mlp   layer l = 1..num_layers:  h_l = dropout(act(BN(W_l h_{l-1} + b_l))),  h_0 = x
          x (B, I) -> h (B, H); width H = hidden_size; act relu or tanh; BN optional
    cnn   x (B, S*S) seen as a (B, 1, S, S) image; num_layers blocks of
          conv 3x3 (channels) -> BN -> ReLU -> 2x2 max-pool (ceil: 8 -> 4 -> 2 -> 1 -> 1)
          then flatten -> linear -> ReLU: h (B, H)

Both expose ``layers``, an ``nn.ModuleList`` of one entry per hidden layer, each with a
``.linear`` whose ``weight`` is that layer's (output, input) map: training logs the gradient
norm of each entry, evaluation plots ``layers[0].linear.weight`` rows as first-layer filters.
``forward`` returns ``(h, None)``: there is no state, as ``VectorModel`` expects of a network.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from torch import Tensor, nn

from rnnzoo.cells.base import constructor_options
from rnnzoo.cells.checks import refuse_unknown, require_bool, require_choice, require_positive_int, require_rate

ACTIVATIONS = ("relu", "tanh")


class DenseLayer(nn.Module):
    """``linear -> batch norm (optional) -> activation -> dropout``: ``(B, I) -> (B, H)``."""

    def __init__(self, in_features: int, out_features: int, batch_norm: bool, activation: str, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        # He init for ReLU, Glorot for tanh, so a deep stack without batch norm starts with
        # activations of steady scale rather than torch's default (which shrinks them layer by layer).
        if activation == "relu":
            nn.init.kaiming_normal_(self.linear.weight, nonlinearity="relu")
        else:
            nn.init.xavier_normal_(self.linear.weight, gain=nn.init.calculate_gain("tanh"))
        nn.init.zeros_(self.linear.bias)
        self.norm = nn.BatchNorm1d(out_features) if batch_norm else nn.Identity()
        self.activation = nn.ReLU() if activation == "relu" else nn.Tanh()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.activation(self.norm(self.linear(x))))


class MLP(nn.Module):
    """``num_layers`` dense layers of width ``hidden_size`` over one vector ``(B, I) -> (B, H)``.

    Options: ``num_layers`` (depth, default 10), ``batch_norm`` (default true), ``dropout`` in
    [0, 1) after each layer, ``activation`` ``"relu"`` or ``"tanh"``. A bad value raises a
    ValueError naming the option.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 10,
        batch_norm: bool = True,
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.input_size = require_positive_int("input_size", input_size)
        self.hidden_size = require_positive_int("hidden_size", hidden_size)
        self.num_layers = require_positive_int("num_layers", num_layers)
        self.batch_norm = require_bool("batch_norm", batch_norm)
        self.dropout = require_rate("dropout", dropout)
        self.activation = require_choice("activation", activation, ACTIVATIONS)
        widths = [input_size] + [hidden_size] * num_layers
        self.layers = nn.ModuleList(
            DenseLayer(widths[i], widths[i + 1], batch_norm, activation, self.dropout) for i in range(num_layers)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        _require_vectors(x, self.input_size, "mlp")
        for layer in self.layers:
            x = layer(x)  # (B, H)
        return x, None

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, activation={self.activation!r}"


class Filters(NamedTuple):
    """A convolution as the linear map it applies to each patch: ``weight`` ``(C_out, C_in * k * k)``."""

    weight: Tensor


class ConvBlock(nn.Module):
    """``conv 3x3 -> batch norm -> ReLU -> 2x2 max-pool``: ``(B, C_in, S, S) -> (B, C, ceil(S / 2), ceil(S / 2))``."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(channels)
        # ceil_mode: a 1-pixel side stays 1, so any depth fits any image (7 -> 4 -> 2 -> 1 -> 1).
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    @property
    def linear(self) -> Filters:
        """The kernels flattened, ``(C, C_in * 9)``: what evaluation plots as first-layer filters (3x3 images)."""
        return Filters(self.conv.weight.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.norm(self.conv(x)).relu())


class CNN(nn.Module):
    """A small CNN over one flattened square image ``(B, S * S) -> (B, H)``.

    Options: ``channels`` per convolution (default 32), ``num_layers`` convolution blocks
    (default 2). ``layers`` holds the blocks, then the dense layer to width ``hidden_size``.
    A non-square input size or a bad option raises a ValueError naming it.
    """

    def __init__(self, input_size: int, hidden_size: int, channels: int = 32, num_layers: int = 2) -> None:
        super().__init__()
        self.input_size = require_positive_int("input_size", input_size)
        self.hidden_size = require_positive_int("hidden_size", hidden_size)
        self.channels = require_positive_int("channels", channels)
        self.num_layers = require_positive_int("num_layers", num_layers)
        self.side = math.isqrt(input_size)
        if self.side * self.side != input_size:
            raise ValueError(f"cnn reads square images: input_size {input_size} is not a square (a side times itself)")
        side = self.side
        blocks: list[nn.Module] = []
        for index in range(num_layers):
            blocks.append(ConvBlock(1 if index == 0 else channels, channels))
            side = -(-side // 2)  # ceil: the pool's ceil_mode
        dense = DenseLayer(channels * side * side, hidden_size, batch_norm=False, activation="relu", dropout=0.0)
        self.layers = nn.ModuleList([*blocks, dense])

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        _require_vectors(x, self.input_size, "cnn")
        image = x.reshape(-1, 1, self.side, self.side)  # (B, 1, S, S): the row-major pixels back in rows
        for block in self.layers[:-1]:
            image = block(image)  # (B, C, S', S')
        return self.layers[-1](image.flatten(1)), None  # (B, H)

    def extra_repr(self) -> str:
        return f"{self.input_size} ({self.side}x{self.side}), {self.hidden_size}, channels={self.channels}, num_layers={self.num_layers}"


def _require_vectors(x: Tensor, input_size: int, name: str) -> None:
    if x.dim() != 2 or x.shape[1] != input_size:
        raise ValueError(f"{name} classifies vectors: input must have shape (batch, {input_size}), got {tuple(x.shape)}")


BASELINES: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN}


def names() -> list[str]:
    """The baselines' names, valid as an experiment's ``cell``."""
    return sorted(BASELINES)


def options(name: str) -> tuple[str, ...]:
    """The keyword options of baseline ``name`` (its ``cell_options``)."""
    return constructor_options(BASELINES[name])


def make(name: str, input_size: int, hidden_size: int, **kwargs: Any) -> nn.Module:
    """Baseline ``name`` on vectors of ``input_size``, width ``hidden_size``; an unknown option is a ValueError."""
    refuse_unknown(sorted(kwargs), options(name), whose=f"for cell {name!r}")
    return BASELINES[name](input_size, hidden_size, **kwargs)
