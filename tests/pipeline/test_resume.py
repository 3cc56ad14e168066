"""A resumed run records exactly what an uninterrupted run records: weights, train_history.json,
every MLflow metric history and the final metrics (timing fields aside).

Each case is interrupted mid logging window, after a checkpoint, with records already logged past
that checkpoint (as a killed run leaves them), then resumed; parametrized over the task kinds
(a sequence task, a language model carrying state across batches, the vector task) and cells.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch

from rnnzoo.pipeline import config, files
from rnnzoo.pipeline.stages import train as train_stage
from rnnzoo.pipeline.stages.evaluate import evaluate
from rnnzoo.pipeline.stages.prepare import prepare
from tests.pipeline.conftest import interruptible_project

TIMING = {"train.steps_per_second", "steps_per_second"}

EXPERIMENTS: dict[str, dict[str, Any]] = {
    "janet-adding": {
        "cell": "janet", "task": "adding", "hidden_size": 8, "cell_options": {"max_timescale": 6},
        "task_options": {"length": 6, "train_size": 64, "valid_size": 32}, "model_options": {}, "train": {"eval_every": 4},
    },
    "rhn-adding": {
        "cell": "rhn", "task": "adding", "hidden_size": 8, "cell_options": {"depth": 2},
        "task_options": {"length": 6, "train_size": 64, "valid_size": 32}, "model_options": {}, "train": {},
    },
    "lstm-ptb": {  # the state carried across batches is in the checkpoint too
        "cell": "lstm", "task": "ptb", "hidden_size": 8, "cell_options": {}, "task_options": {"bptt": 5, "sentences": 200},
        "model_options": {}, "train": {"eval_every": 4},
    },
    "unfolded-vector": {
        "cell": "unfolded_lstm", "task": "mnist_vector", "hidden_size": 8, "cell_options": {"depth": 2},
        "task_options": {}, "model_options": {}, "train": {"eval_every": 4},
    },
}
# eval_every 4 (valid.* curves and the best model kept) in all but rhn-adding: the kill in step 8
# falls between the evaluations at 4 and 8, so the resumed run redoes the one at 8.


class Interrupted(Exception):
    """Stands for the kill: raised inside a training step."""


def _project(root: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> config.Config:
    return interruptible_project(root, {name: EXPERIMENTS[name]}, monkeypatch)


def _records(name: str) -> dict[str, Any]:
    """Everything a run records, timing fields aside."""
    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    client = mlflow.MlflowClient()
    histories = {
        key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))]
        for key in run.data.metrics
        if key not in TIMING
    }
    history = [{k: v for k, v in record.items() if k not in TIMING} for record in json.loads((files.reports_dir(name) / "train_history.json").read_text())]
    valid = json.loads((files.reports_dir(name) / "valid_history.json").read_text())
    weights = torch.load(files.model_path(name), weights_only=True)["state_dict"]
    return {"mlflow": histories, "history": history, "valid": valid, "metrics": evaluate_metrics(name), "weights": weights}


def evaluate_metrics(name: str) -> dict[str, float]:
    return json.loads((files.reports_dir(name) / "metrics.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_resumed_run_records_what_an_uninterrupted_run_records(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = _project(tmp_path / "uninterrupted", name, monkeypatch)
    train_stage.train(loaded, name, progress=False)
    evaluate(loaded, name)
    expected = _records(name)

    loaded = _project(tmp_path / "resumed", name, monkeypatch)
    real_loss = train_stage.objectives.loss
    calls = {"n": 0}

    def loss_then_kill(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 8:  # during step 8: step 6's record is logged, the checkpoint is step 5's
            raise Interrupted
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_stage.objectives, "loss", loss_then_kill)
    with pytest.raises(Interrupted):
        train_stage.train(loaded, name, progress=False)
    monkeypatch.setattr(train_stage.objectives, "loss", real_loss)
    assert torch.load(files.checkpoint_path(name), weights_only=True)["step"] == 5
    train_stage.train(loaded, name, resume=True, progress=False)
    assert not files.checkpoint_path(name).parent.exists(), "a finished run leaves no checkpoint, nor its folder"
    evaluate(loaded, name)
    resumed = _records(name)

    assert resumed["history"] == expected["history"]
    assert resumed["mlflow"] == expected["mlflow"], "each metric history, one row a step"
    assert [step for step, _ in resumed["mlflow"]["train.loss"]] == [3, 6, 9, 12, 13]
    assert resumed["valid"] == expected["valid"]
    if EXPERIMENTS[name]["train"].get("eval_every"):
        assert [record["step"] for record in resumed["valid"]] == [4, 8, 12, 13]
        assert [step for step, _ in resumed["mlflow"]["valid.loss"]] == [4, 8, 12, 13]
    assert resumed["metrics"] == expected["metrics"]
    assert resumed["weights"].keys() == expected["weights"].keys()
    for key, value in expected["weights"].items():
        assert torch.equal(resumed["weights"][key], value), key


def test_a_rerun_of_the_same_params_adds_no_copy_of_its_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # dvc repro and rnnzoo run rerun a stage without --resume; it reopens the same MLflow run.
    loaded = _project(tmp_path / "project", "janet-adding", monkeypatch)
    train_stage.train(loaded, "janet-adding", progress=False)
    evaluate(loaded, "janet-adding")
    first = _records("janet-adding")
    prepare(loaded, "janet-adding")
    train_stage.train(loaded, "janet-adding", progress=False)
    evaluate(loaded, "janet-adding")
    again = _records("janet-adding")
    assert again["mlflow"] == first["mlflow"], "one row a step and a value, however many reruns"
    assert all(len(rows) == len({step for step, _ in rows}) for rows in again["mlflow"].values())
