"""Every registered task keeps the contract of ``pipeline.tasks.base``: deterministic tensor-only
splits whose shapes match its spec, batches a model of the right kind can consume."""

from __future__ import annotations

import io
import math

import pytest
import torch

from rnnzoo.pipeline.model import build_model
from rnnzoo.pipeline.objectives import loss
from rnnzoo.pipeline.tasks import TASKS, make_task
from rnnzoo.pipeline.tasks.base import IGNORE_INDEX, Splits, Task, TaskError

# Small enough for a test; every registered task must appear here.
SMALL = {
    "adding": {"length": 6, "train_size": 40, "valid_size": 10},
    "copy": {"length": 5, "train_size": 40, "valid_size": 10},
    "seq_mnist": {"limit": 40},
    "mnist_vector": {"limit": 40},
    "frequency": {"duration": 10.0, "train_size": 40, "valid_size": 10},
    "ptb": {"sentences": 40, "bptt": 7},
}


def prepared(name: str, seed: int = 0) -> tuple[Task, Splits]:
    task = make_task(name, SMALL[name])
    return task, task.prepare(None, seed)


def test_every_registered_task_has_small_test_options() -> None:
    assert set(SMALL) == set(TASKS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_prepare_is_deterministic_in_the_seed(name: str) -> None:
    _, first = prepared(name, seed=3)
    _, again = prepared(name, seed=3)
    _, other = prepared(name, seed=4)
    for split in ("train", "valid", "test"):
        assert first[split].keys() == again[split].keys()
        assert all(torch.equal(first[split][key], again[split][key]) for key in first[split])
    assert not torch.equal(first["train"]["x"], other["train"]["x"])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_splits_are_tensors_that_survive_a_weights_only_load(name: str) -> None:
    _, splits = prepared(name)
    assert set(splits) == {"train", "valid", "test"}
    buffer = io.BytesIO()
    torch.save(splits, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert all(torch.equal(loaded[s][k], splits[s][k]) for s in splits for k in splits[s])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_spec_holds_the_steps_a_model_reads_at_once(name: str) -> None:
    # Bench times the model at spec.steps: every batch's time axis is that long (a language
    # model's last segment may be shorter); vector tasks have none.
    task, splits = prepared(name)
    spec = task.spec(splits)
    batches = list(task.batches(splits["train"], 4))
    if spec.head == "vector_classification":
        assert spec.steps is None and all(batch.x.dim() == 2 for batch in batches)
        return
    lengths = [batch.x.shape[1] for batch in batches]
    assert lengths[0] == spec.steps and max(lengths) == spec.steps, (spec.steps, lengths)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_match_the_spec(name: str) -> None:
    task, splits = prepared(name)
    spec = task.spec(splits)
    assert math.isfinite(spec.baseline_loss) and spec.baseline_loss > 0 and spec.baseline
    for split in splits.values():
        x, target = split["x"], split["target"]
        count = x.shape[0]
        if spec.head == "language_model":
            assert x.dim() == 1 and target.shape == x.shape and int(x.max()) < spec.input_size
        elif spec.head == "vector_classification":
            assert x.shape == (count, spec.input_size) and target.shape == (count,)
        else:
            assert x.dim() == 3 and x.shape[2] == spec.input_size
        if spec.head == "last_classification":
            assert target.shape == (count,) and 0 <= int(target.min()) and int(target.max()) < spec.output_size
        if spec.head == "step_classification":
            assert target.shape == x.shape[:2]
            scored = target[target != IGNORE_INDEX]
            assert 0 <= int(scored.min()) and int(scored.max()) < spec.output_size
        if spec.head == "last_regression":
            assert target.shape == (count, spec.output_size)
        assert ("times" in split) == spec.uses_times
        if spec.uses_times:
            assert split["times"].shape == x.shape[:2]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_model_trains_one_step_on_a_batch(name: str) -> None:
    task, splits = prepared(name)
    spec = task.spec(splits)
    cell = "unfolded_lstm" if task.vector_input else "phased_lstm" if spec.uses_times else "lstm"
    model = build_model(cell, spec, hidden_size=8)
    batch = next(task.batches(splits["train"], 4, torch.Generator().manual_seed(0)))
    prediction, _ = model(batch)
    value = loss(spec, prediction, batch)
    value.backward()
    assert torch.isfinite(value)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_unknown_option_is_named(name: str) -> None:
    with pytest.raises(TaskError, match=rf"unknown option no_such_option; allowed for task '{name}': "):
        make_task(name, {"no_such_option": 1})

