"""What a task is: its data, its shapes, the head it needs and the baseline it is judged by.

A task makes (or loads) its data once, in the ``prepare`` stage, as a dict of splits, each a
dict of tensors saved to disk: ``train`` to fit on, ``valid`` to select a checkpoint on (and to
compute the baseline on), ``test``, disjoint from both, to report on. Training and evaluation read those files back and ask the task
for batches. The loss and metrics follow from the head (see ``pipeline.objectives``).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import Tensor

from rnnzoo.cells.checks import InvalidValue, refuse_unknown

Head = Literal["last_regression", "last_classification", "step_classification", "language_model", "vector_classification"]
Split = dict[str, Tensor]
Splits = dict[str, Split]
# Targets equal to this are left out of the loss and metrics (torch's cross_entropy default).
IGNORE_INDEX = -100


class Batch(NamedTuple):
    x: Tensor  # (B, T, I) features, (B, T) token ids, or (B, I) vectors
    target: Tensor  # (B,) or (B, 1) for last-step heads, (B, T) for per-step heads
    lengths: Tensor | None = None  # (B,) valid steps of each sequence
    times: Tensor | None = None  # (B, T) timestamps, for cells that read them

    def map(self, fn: Callable[[Tensor], Tensor]) -> Batch:
        """The batch with ``fn`` applied to each tensor it holds (absent fields stay None)."""
        return Batch(fn(self.x), fn(self.target), *(None if t is None else fn(t) for t in (self.lengths, self.times)))


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    input_size: int  # features per step (vocabulary size for language models)
    output_size: int  # 1 for regression, classes, or vocabulary size
    head: Head
    baseline_loss: float  # the loss of the best memoryless predictor
    baseline: str  # what that baseline is, in words
    loss_name: str  # "mse" or "cross_entropy"
    uses_times: bool = False
    carries_state: bool = False  # language models: state carried across batches (truncated BPTT)
    # Steps a model reads in one call: the sequences' length (a language model's bptt segment);
    # None for vector tasks (no time axis). Bench times the model at it.
    steps: int | None = None


def drawn_splits(
    seed: int, train_size: int, valid_size: int, test_size: int, draw: Callable[[int, torch.Generator], Split]
) -> Splits:
    """Synthetic train, valid and test splits, ``draw(count, generator)`` each, from one generator
    seeded with ``seed``, so the same seed gives the same data.

    Drawn in the order train, valid, test: test comes last so that train and valid are the
    examples they were before tasks had a test split (the same seed, bit for bit).
    """
    generator = torch.Generator().manual_seed(seed)
    train, valid = draw(train_size, generator), draw(valid_size, generator)
    return {"train": train, "valid": valid, "test": draw(test_size, generator)}


class TaskError(ValueError):
    """Bad task options or data; the message says which value or file and what to do."""


class InvalidTaskOption(InvalidValue, TaskError):
    """A task option outside what is allowed: ``<task> option '<key>' must be <allowed>, got <value>``."""


def require_option(condition: bool, task: str, key: str, value: Any, allowed: str) -> None:
    """Raise ``InvalidTaskOption`` naming ``task``'s option ``key`` unless ``condition`` holds."""
    if not condition:
        raise InvalidTaskOption(f"{task} option {key!r}", value, allowed, key)


class Task(ABC):
    """A dataset with its shapes and baseline; options come from ``params.yaml``."""

    name: ClassVar[str]
    Options: ClassVar[type]  # a dataclass whose fields are the task's options
    vector_input: ClassVar[bool] = False  # True: one vector per example, no time axis
    head: ClassVar[Head]  # what the model predicts (TaskSpec.head), known before any data exists

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = parse_options(self.name, self.Options, options or {})

    @abstractmethod
    def prepare(self, data_dir: Path | None, seed: int) -> Splits:
        """Make or load the data: ``{"train": {...}, "valid": {...}, "test": {...}}``, tensors only."""

    @abstractmethod
    def spec(self, splits: Splits) -> TaskSpec:
        """Shapes, head and baseline of the prepared data."""

    def batches(self, split: Split, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Mini-batches of a split, shuffled with ``generator`` when one is given."""
        count = split["x"].shape[0]
        order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
        for start in range(0, count, batch_size):
            index = order[start : start + batch_size]
            yield Batch(
                split["x"][index],
                split["target"][index],
                split["lengths"][index] if "lengths" in split else None,
                split["times"][index] if "times" in split else None,
            )


def parse_options(task: str, options_type: type, options: Mapping[str, Any]) -> Any:
    """Build the options dataclass, naming unknown keys and wrongly typed values."""
    fields = {field.name: field for field in dataclasses.fields(options_type)}
    refuse_unknown(sorted(options, key=str), list(fields), whose=f"for task {task!r}", error=TaskError)
    for key, value in options.items():
        default = getattr(options_type, key, None) if fields[key].default is not dataclasses.MISSING else None
        expected = type(default) if default is not None else None
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if expected is not None and not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise InvalidTaskOption(f"{task} option {key!r}", value, f"of type {expected.__name__}", key)
    return options_type(**options)


def prior_cross_entropy(train_targets: Tensor, valid_targets: Tensor, classes: int) -> tuple[float, Tensor]:
    """Cross-entropy on valid of the add-one smoothed train class prior, and that prior.

    The memoryless baseline of classification and language modelling (a unigram model);
    add-one because a class may be missing from train (``<unk>``, a rare digit).
    """
    counts = torch.bincount(train_targets.reshape(-1), minlength=classes).double() + 1.0
    prior = counts / counts.sum()
    return float(-prior.log()[valid_targets.reshape(-1)].mean()), prior
