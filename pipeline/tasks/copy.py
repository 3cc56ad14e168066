"""The copy (memory) task (Hochreiter & Schmidhuber 1997; the form of Arjovsky et al. 2016, used by
Tallec & Ollivier, "Can recurrent neural networks warp time?", ICLR 2018, for the chrono init).

A sequence shows 10 symbols drawn uniformly from ``1..8``, then ``T - 1`` blanks (0) and the
delimiter (9), so that ``T`` steps separate the symbols from the recall; during the last 10 steps
(blank inputs) the model must output the 10 symbols in order. Total length ``T + 20``; inputs are
one-hot over the 10 symbols ``0..9``. Only the 10 recall steps are scored: a memoryless predictor
guesses uniformly over ``1..8``, cross-entropy ``log 8 ≈ 2.079`` per recall step, accuracy 1/8.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from torch.nn import functional as F

from rnnzoo.pipeline.tasks.base import IGNORE_INDEX, Split, Splits, Task, TaskSpec, drawn_splits, require_option

RECALL = 10  # symbols to remember
SYMBOLS = 8  # drawn from 1..SYMBOLS
BLANK = 0
DELIMITER = 9
ALPHABET = 10  # one-hot width and number of classes: blank, 8 symbols, delimiter


@dataclasses.dataclass(frozen=True)
class CopyOptions:
    length: int = 20  # T, steps from the last symbol shown to the first recalled
    train_size: int = 10_000
    valid_size: int = 1_000
    test_size: int = 1_000  # held out to report on; drawn after train and valid, which stay as before

    def __post_init__(self) -> None:
        require_option(self.length >= 1, "copy", "length", self.length, ">= 1 (the delimiter's step)")
        for key in ("train_size", "valid_size", "test_size"):
            require_option(getattr(self, key) >= 1, "copy", key, getattr(self, key), ">= 1")


def copy_sequences(count: int, length: int, generator: torch.Generator) -> Split:
    """``count`` copy-task sequences: x ``(N, T + 20, 10)`` one-hot, target ``(N, T + 20)`` long."""
    total = length + 2 * RECALL
    symbols = torch.randint(1, SYMBOLS + 1, (count, RECALL), generator=generator)  # (N, 10)
    tokens = torch.full((count, total), BLANK, dtype=torch.long)
    tokens[:, :RECALL] = symbols
    tokens[:, RECALL + length - 1] = DELIMITER  # the step just before the recall starts
    target = torch.full((count, total), IGNORE_INDEX, dtype=torch.long)
    target[:, -RECALL:] = symbols
    return {"x": F.one_hot(tokens, ALPHABET).float(), "target": target}


class CopyTask(Task):
    name = "copy"
    head = "step_classification"
    Options = CopyOptions

    def prepare(self, data_dir: Path | None, seed: int) -> Splits:
        return drawn_splits(
            seed, self.options.train_size, self.options.valid_size, self.options.test_size,
            lambda count, generator: copy_sequences(count, self.options.length, generator),
        )

    def spec(self, splits: Splits) -> TaskSpec:
        return TaskSpec(
            input_size=ALPHABET, output_size=ALPHABET, head=self.head, baseline_loss=math.log(SYMBOLS),
            baseline=f"memoryless: uniform over the {SYMBOLS} symbols at each recall step: cross-entropy log 8, accuracy 1/8",
            loss_name="cross_entropy", steps=int(splits["train"]["x"].shape[1]),
        )
