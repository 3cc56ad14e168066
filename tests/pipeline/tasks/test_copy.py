"""The copy task: 10 symbols, T steps to the recall, the 10 symbols recalled at the end."""

from __future__ import annotations

import math

import pytest
import torch

from rnnzoo.pipeline.tasks import make_task
from rnnzoo.pipeline.tasks.base import IGNORE_INDEX, TaskError
from rnnzoo.pipeline.tasks.copy import ALPHABET, BLANK, DELIMITER, RECALL


def test_copy_sequences_follow_the_layout() -> None:
    length = 7
    task = make_task("copy", {"length": length, "train_size": 50, "valid_size": 5})
    split = task.prepare(None, 0)["train"]
    x, target = split["x"], split["target"]
    assert x.shape == (50, length + 2 * RECALL, ALPHABET) and target.shape == (50, length + 2 * RECALL)
    assert torch.equal(x.sum(-1), torch.ones(50, length + 2 * RECALL))  # one-hot
    tokens = x.argmax(-1)
    symbols = tokens[:, :RECALL]
    assert 1 <= int(symbols.min()) and int(symbols.max()) <= 8
    assert (tokens[:, RECALL + length - 1] == DELIMITER).all()
    rest = torch.cat([tokens[:, RECALL : RECALL + length - 1], tokens[:, -RECALL:]], dim=1)
    assert (rest == BLANK).all()
    assert torch.equal(target[:, -RECALL:], symbols)  # recall targets are the symbols, in order
    assert (target[:, :-RECALL] == IGNORE_INDEX).all()  # nothing else is scored


def test_copy_baseline_is_log_8() -> None:
    task = make_task("copy", {"length": 3, "train_size": 2, "valid_size": 2})
    spec = task.spec(task.prepare(None, 0))
    assert spec.head == "step_classification" and spec.output_size == ALPHABET
    assert spec.baseline_loss == pytest.approx(math.log(8))


@pytest.mark.parametrize(("option", "value"), [("length", 0), ("train_size", 0), ("valid_size", -1)])
def test_bad_copy_options_name_the_value(option: str, value: int) -> None:
    with pytest.raises(TaskError, match=rf"copy option '{option}' must be >= 1.*got {value}"):
        make_task("copy", {option: value})
