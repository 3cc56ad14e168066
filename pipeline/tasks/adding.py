"""The adding problem (Hochreiter & Schmidhuber 1997; the form of Le et al. 2015 / Arjovsky et al. 2016).

Each step carries two features: a value ``U(0, 1)`` and a marker. Exactly one marker is set in
each half of the sequence; the target is the sum of the two marked values. Predicting the
mean, 1, scores MSE ``Var(u1 + u2) = 1/6 ≈ 0.167``: the baseline a model must beat.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from rnnzoo.pipeline.tasks.base import Split, Splits, Task, TaskSpec, drawn_splits, require_option

BASELINE_MSE = 1.0 / 6.0


@dataclasses.dataclass(frozen=True)
class AddingOptions:
    length: int = 50  # T, steps per sequence
    train_size: int = 10_000
    valid_size: int = 1_000
    test_size: int = 1_000  # held out to report on; drawn after train and valid, which stay as before

    def __post_init__(self) -> None:
        require_option(self.length >= 2, "adding", "length", self.length, ">= 2 (one marker per half)")
        for key in ("train_size", "valid_size", "test_size"):
            require_option(getattr(self, key) >= 1, "adding", key, getattr(self, key), ">= 1")


def adding_sequences(count: int, length: int, generator: torch.Generator) -> Split:
    """``count`` adding-problem sequences: x ``(N, T, 2)``, target ``(N, 1)``."""
    values = torch.rand(count, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (count,), generator=generator)
    second = torch.randint(half, length, (count,), generator=generator)
    markers = torch.zeros(count, length)
    rows = torch.arange(count)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    target = (values * markers).sum(dim=1, keepdim=True)
    return {"x": torch.stack([values, markers], dim=-1), "target": target}


class AddingTask(Task):
    name = "adding"
    head = "last_regression"
    Options = AddingOptions

    def prepare(self, data_dir: Path | None, seed: int) -> Splits:
        return drawn_splits(
            seed, self.options.train_size, self.options.valid_size, self.options.test_size,
            lambda count, generator: adding_sequences(count, self.options.length, generator),
        )

    def spec(self, splits: Splits) -> TaskSpec:
        return TaskSpec(
            input_size=2, output_size=1, head=self.head, baseline_loss=BASELINE_MSE,
            baseline="predict 1 (the mean sum): MSE 1/6", loss_name="mse", steps=int(splits["train"]["x"].shape[1]),
        )
