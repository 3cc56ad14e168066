"""Loss and metrics, which follow from the task's head.

Metrics are accumulated as sums and counts over batches so that a whole split's figures do not
depend on how it was batched.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnzoo.pipeline.model import SequenceModel, VectorModel, detach_state
from rnnzoo.pipeline.tasks.base import IGNORE_INDEX, Batch, Split, Task, TaskSpec


def loss(spec: TaskSpec, prediction: Tensor, batch: Batch) -> Tensor:
    """Mean loss of one batch: MSE for regression, cross-entropy (ignored targets left out) otherwise."""
    if spec.loss_name == "mse":
        return F.mse_loss(prediction, batch.target)
    return F.cross_entropy(prediction.reshape(-1, prediction.shape[-1]), batch.target.reshape(-1), ignore_index=IGNORE_INDEX)


def loss_items(spec: TaskSpec, batch: Batch) -> int:
    """How many items :func:`loss` averages over: every target value for regression, the targets
    not ignored otherwise (data-parallel ranks weight their means by it)."""
    if spec.loss_name == "mse":
        return batch.target.numel()
    return int((batch.target != IGNORE_INDEX).sum())


class MetricAccumulator:
    """Sums of per-item losses and hits over batches; ``result()`` gives the split's metrics."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    @torch.no_grad()
    def add(self, prediction: Tensor, batch: Batch) -> None:
        if self.spec.loss_name == "mse":
            self.sums["loss"] += F.mse_loss(prediction, batch.target, reduction="sum").item() / prediction.shape[-1]
            self.count += prediction.shape[0]
            return
        logits = prediction.reshape(-1, prediction.shape[-1])
        target = batch.target.reshape(-1)
        counted = target != IGNORE_INDEX
        self.sums["loss"] += F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum").item()
        self.sums["correct"] += (logits.argmax(-1)[counted] == target[counted]).sum().item()
        self.count += int(counted.sum())

    def result(self) -> dict[str, float]:
        mean_loss = self.sums["loss"] / max(self.count, 1)
        metrics = {"loss": mean_loss, self.spec.loss_name: mean_loss}
        if self.spec.loss_name == "cross_entropy":
            metrics["accuracy"] = self.sums["correct"] / max(self.count, 1)
        if self.spec.head == "language_model":
            metrics["perplexity"] = math.exp(min(mean_loss, 700.0))
            metrics["bits_per_token"] = mean_loss / math.log(2.0)
        return metrics


def selection_metric(spec: TaskSpec) -> tuple[str, bool]:
    """The metric a checkpoint is selected on, and whether higher is better: accuracy where one
    label is predicted per example (MNIST, frequency: the JANET and IndRNN papers select so), else
    the loss (regression, language models, and per-step labels such as the copy task's, whose
    papers judge the loss against its memoryless baseline)."""
    if spec.head in ("last_classification", "vector_classification"):
        return "accuracy", True
    return "loss", False


def is_better(spec: TaskSpec, value: float, best: float | None) -> bool:
    """Whether ``value`` of the selection metric beats ``best`` (None: nothing yet)."""
    _, higher = selection_metric(spec)
    return best is None or (value > best if higher else value < best)


@torch.no_grad()
def split_metrics(
    model: SequenceModel | VectorModel,
    task: Task,
    split: Split,
    batch_size: int,
    on_batch: Callable[[Tensor, Batch], Any] | None = None,
) -> dict[str, float]:
    """The model's metrics on a whole split, in order (a language model carries its state across
    the split's batches); ``on_batch(prediction, batch)`` sees each batch. The caller sets eval mode."""
    accumulator = MetricAccumulator(model.spec)
    state = None
    for batch in task.batches(split, batch_size):
        batch = batch.map(lambda t: t.to(next(model.parameters()).device))
        prediction, new_state = model(batch, state)
        state = detach_state(new_state) if model.spec.carries_state else None
        accumulator.add(prediction.float(), batch)
        if on_batch is not None:
            on_batch(prediction, batch)
    return accumulator.result()
