"""A cell from the registry (or a feed-forward baseline, ``pipeline.baselines``) plus the head its task needs."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from rnnzoo import cells
from rnnzoo.pipeline import baselines
from rnnzoo.pipeline.tasks.base import Batch, TaskSpec

LAST_STEP_HEADS = ("last_regression", "last_classification")


def last_valid_step(outputs: Tensor, lengths: Tensor | None) -> Tensor:
    """``outputs[b, lengths[b] - 1]`` for each sequence: ``(B, T, F) -> (B, F)``."""
    if lengths is None:
        return outputs[:, -1]
    index = (lengths.to(outputs.device) - 1).view(-1, 1, 1).expand(-1, 1, outputs.shape[-1])
    return outputs.gather(1, index).squeeze(1)


def is_sequence_cell(cell: str) -> bool:
    """Whether ``cell`` makes a ``SequenceModel`` (a registry cell over time) or a ``VectorModel``
    (``unfolded_lstm`` and the feed-forward baselines): the one place this is decided by name."""
    return cell not in baselines.BASELINES and cells.is_sequence_model(cell)


class SequenceModel(nn.Module):
    """Embedding (language models) -> recurrent layer -> linear head.

    What stages ask of a model, rather than its class: ``is_sequence``, ``graphs`` (the ONNX
    graphs it exports, the first served statelessly and benchmarked) and ``diagnostics`` (the
    extra records and plots it has).
    """

    is_sequence: ClassVar[bool] = True
    diagnostics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cell: str, spec: TaskSpec, hidden_size: int, embedding_size: int = 0, tie_weights: bool = False, **cell_options: Any) -> None:
        super().__init__()
        if not is_sequence_cell(cell):
            raise ValueError(f"cell {cell!r} maps vectors, not sequences: pair it with a vector task such as 'mnist_vector'")
        if spec.head == "vector_classification":
            raise ValueError(f"this task classifies vectors: use cell 'unfolded_lstm', 'mlp' or 'cnn', not {cell!r}")
        self.spec = spec
        self.embedding = None
        input_size = spec.input_size
        if spec.head == "language_model":
            embedding_size = embedding_size or hidden_size
            self.embedding = nn.Embedding(spec.input_size, embedding_size)
            input_size = embedding_size
        # cells.make answers nn.Module (a vector model for unfolded_lstm); a sequence cell's is a RecurrentLayer.
        self.layer = cast(cells.RecurrentLayer, cells.make(cell, input_size, hidden_size, **cell_options))
        if self.layer.bidirectional and spec.head not in LAST_STEP_HEADS:
            raise ValueError(f"bidirectional=True reads the future: head {spec.head!r} predicts step by step and needs a unidirectional layer")
        self.decoder = nn.Linear(self.layer.output_size, spec.output_size)
        if tie_weights:
            if self.embedding is None or self.embedding.embedding_dim != self.layer.output_size:
                raise ValueError("tie_weights needs a language model whose embedding_size equals the layer's output size")
            self.decoder.weight = self.embedding.weight

    @property
    def graphs(self) -> tuple[str, ...]:
        """The whole-sequence graph and, for a unidirectional layer, the streaming step graph."""
        return ("sequence",) if self.layer.bidirectional else ("sequence", "step")

    @property
    def takes_time(self) -> bool:
        """Whether the model reads timestamps: a cell that takes them on a task that has them."""
        return self.layer.takes_time and self.spec.uses_times

    def layer_gradient_norms(self) -> list[float]:
        """None here: the diagnostics are a vector model's (see ``diagnostics``)."""
        return []

    def first_layer_weight(self) -> Tensor | None:
        return None

    def _summary(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        """What a last-step head reads: the forward direction at each sequence's last valid step
        and, when bidirectional, the backward direction at step 0, where it has read everything."""
        if not self.layer.bidirectional:
            return last_valid_step(outputs, lengths)
        forward, backward = outputs.split(self.layer.hidden_size, dim=-1)
        return torch.cat([last_valid_step(forward, lengths), backward[:, 0]], dim=-1)

    def forward(self, batch: Batch, state: Any = None) -> tuple[Tensor, Any]:
        x = self.embedding(batch.x) if self.embedding is not None else batch.x
        times = batch.times if self.layer.takes_time else None
        outputs, state = self.layer(x, state, lengths=batch.lengths, times=times)  # (B, T, D*H)
        if self.spec.head in LAST_STEP_HEADS:
            outputs = self._summary(outputs, batch.lengths)  # (B, D*H)
        return self.decoder(outputs), state


class VectorModel(nn.Module):
    """``unfolded_lstm``, ``mlp`` or ``cnn`` over one vector -> linear classifier.

    ``network(x)`` maps ``(B, I) -> ((B, H), state or None)`` and has ``layers``, one entry per
    hidden layer, each with a ``.linear`` (gradient norms per layer, first-layer filters).
    """

    is_sequence: ClassVar[bool] = False
    takes_time: ClassVar[bool] = False
    graphs: ClassVar[tuple[str, ...]] = ("vector",)
    # Recorded in training and drawn by evaluate: does the gradient reach the first layers, and what did they learn?
    diagnostics: ClassVar[tuple[str, ...]] = ("layer_gradient_norms", "first_layer_filters")

    def __init__(self, cell: str, spec: TaskSpec, hidden_size: int, **cell_options: Any) -> None:
        super().__init__()
        if spec.head != "vector_classification":
            raise ValueError(f"cell {cell!r} classifies vectors; task head {spec.head!r} needs a sequence cell")
        self.spec = spec
        make = baselines.make if cell in baselines.BASELINES else cells.make
        self.network = make(cell, spec.input_size, hidden_size, **cell_options)
        self.decoder = nn.Linear(hidden_size, spec.output_size)

    def forward(self, batch: Batch, state: Any = None) -> tuple[Tensor, Any]:
        h, state = self.network(batch.x)
        return self.decoder(h), state

    def layer_gradient_norms(self) -> list[float]:
        """Gradient norm of each hidden layer's parameters, first to last (after a backward pass)."""
        norms = []
        for layer in self._hidden_layers():
            grads = [p.grad for p in layer.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else 0.0)
        return norms

    def first_layer_weight(self) -> Tensor:
        """The first hidden layer's ``.linear`` weight, one row per unit: ``(H, I)`` (a cnn's 3 x 3 kernels, flattened)."""
        return cast(nn.Linear, self._hidden_layers()[0].linear).weight.detach()

    def _hidden_layers(self) -> list[nn.Module]:
        """``network.layers``: every vector network has one entry per hidden layer (see the class)."""
        return list(cast(nn.ModuleList, self.network.layers))


class PredictionModule(nn.Module):
    """``x -> prediction``: the model with a one-array interface, for MLflow's PyTorch pyfunc.

    That pyfunc passes one array, so a cell that reads timestamps (``phased_lstm``) on a task that
    has them takes them as the last feature of each step: ``(B, T, I + 1)``, built by :meth:`pack`.
    On a task without timestamps it numbers the steps itself (0, 1, ...), as in training.
    """

    def __init__(self, model: SequenceModel | VectorModel) -> None:
        super().__init__()
        self.model = model
        self.takes_time = model.takes_time

    def pack(self, batch: Batch) -> Tensor:
        """The one array this module takes for ``batch``."""
        if not self.takes_time:
            return batch.x
        if batch.times is None:
            raise ValueError(f"{type(self.model.layer).__name__} reads timestamps: the batch has none to pack")
        return torch.cat([batch.x, batch.times.unsqueeze(-1).to(batch.x.dtype)], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        if self.takes_time:
            return self.model(Batch(x[..., :-1], x, times=x[..., -1]))[0]
        return self.model(Batch(x, x))[0]


def build_model(cell: str, spec: TaskSpec, hidden_size: int, **options: Any) -> SequenceModel | VectorModel:
    """The model for ``cell`` on a task of ``spec``; ``options`` are cell and head options."""
    if is_sequence_cell(cell):
        return SequenceModel(cell, spec, hidden_size, **options)
    return VectorModel(cell, spec, hidden_size, **options)


def detach_state(state: Any) -> Any:
    """Cut the graph between truncated-BPTT segments, keeping the values."""
    return None if state is None else type(state)(*(t.detach() for t in state))
