"""A batch the model cannot train on: batch norm takes statistics over the batch, so a training
batch of one example fails ("Expected more than 1 value per channel"). Every place a batch of
one can reach a model in training mode is covered: an epoch's last, partial batch (skipped), and
a configured batch size of 1 (refused, naming the param). Evaluation runs the model in eval mode
(running statistics), where a batch of one is fine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rnnzoo.pipeline import config, files
from rnnzoo.pipeline.config import ConfigError
from rnnzoo.pipeline.stages.evaluate import evaluate
from rnnzoo.pipeline.stages.prepare import prepare
from rnnzoo.pipeline.stages.train import batch_stream, min_batch_examples, train
from rnnzoo.pipeline.tasks import make_task
from tests.pipeline.conftest import tiny_params, write_params

BATCH_NORM = {"cell": "unfolded_lstm", "task": "mnist_vector", "hidden_size": 8, "cell_options": {"depth": 2, "batch_norm": True},
              "model_options": {}, "train": {}}


def _load(workdir: Path, train_size: int, batch_size: int, eval_batch_size: int = 64) -> config.Config:
    params = tiny_params()
    params["train"].update(batch_size=batch_size, steps=6)
    params["evaluate"]["batch_size"] = eval_batch_size
    params["experiments"] = {"bn": {**BATCH_NORM, "task_options": {"limit": train_size}}}
    return config.load(write_params(workdir / "params.yaml", params))


def test_an_epochs_last_batch_of_one_is_skipped_and_training_finishes(workdir: Path) -> None:
    loaded = _load(workdir, train_size=33, batch_size=16)  # batches of 16, 16 and 1
    prepare(loaded, "bn")
    train(loaded, "bn", progress=False)
    assert files.model_path("bn").is_file()
    assert len(json.loads((files.reports_dir("bn") / "train_history.json").read_text())) == 3


def test_the_stream_skips_only_batches_too_small_for_the_model(workdir: Path) -> None:
    loaded = _load(workdir, train_size=33, batch_size=16)
    prepare(loaded, "bn")
    splits = files.load_torch(files.dataset_path("bn"), "dataset", "rnnzoo prepare bn")
    task = make_task("mnist_vector", {"limit": 33})
    spec = task.spec(splits)
    sizes = [batch.x.shape[0] for batch, _ in _take(batch_stream(task, splits["train"], spec, loaded.experiment("bn").train, 0, 2), 4)]
    assert sizes == [16, 16, 16, 16], "the batch of one is skipped"
    sizes = [batch.x.shape[0] for batch, _ in _take(batch_stream(task, splits["train"], spec, loaded.experiment("bn").train, 0, 1), 4)]
    assert sizes == [16, 16, 1, 16], "a model without batch norm still sees every example every epoch"


def _take(stream, count: int) -> list:
    return [next(stream) for _ in range(count)]


def test_a_batch_size_of_one_with_batch_norm_is_refused_naming_the_param(workdir: Path) -> None:
    loaded = _load(workdir, train_size=33, batch_size=1)
    prepare(loaded, "bn")
    with pytest.raises(ConfigError, match=r"train.batch_size = 1 .*batch norm.*at least 2"):
        train(loaded, "bn", progress=False)
    assert not files.model_path("bn").exists()


def test_evaluation_with_a_last_batch_of_one_runs_in_eval_mode(workdir: Path) -> None:
    loaded = _load(workdir, train_size=33, batch_size=16, eval_batch_size=1)
    prepare(loaded, "bn")
    train(loaded, "bn", progress=False)
    metrics = evaluate(loaded, "bn")
    assert 0.0 <= metrics["valid.accuracy"] <= 1.0


@pytest.mark.parametrize(("batch_norm", "needed"), [(True, 2), (False, 1)])
def test_min_batch_examples_follows_the_model(batch_norm: bool, needed: int) -> None:
    from rnnzoo.pipeline.model import build_model
    from rnnzoo.pipeline.tasks.base import TaskSpec

    spec = TaskSpec(input_size=4, output_size=3, head="vector_classification", baseline_loss=1.0, baseline="", loss_name="cross_entropy")
    model = build_model("unfolded_lstm", spec, 4, depth=2, batch_norm=batch_norm)
    assert min_batch_examples(model) == needed
    model.network.train()
    model.network(torch.rand(needed, 4))  # the fewest examples it needs train
    if batch_norm:
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            model.network(torch.rand(1, 4))
