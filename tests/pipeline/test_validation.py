"""Training as the papers did: the valid split evaluated every ``train.eval_every`` steps (valid.*
curves in MLflow and ``valid_history.json``), the best model on valid kept as the trained model,
the test split reported for it, and the step learning-rate decay of the IndRNN and RHN papers."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch

from rnnzoo.pipeline import config, files, objectives
from rnnzoo.pipeline.config import ConfigError, TrainConfig
from rnnzoo.pipeline.model_record import ModelRecord
from rnnzoo.pipeline.stages.evaluate import evaluate
from rnnzoo.pipeline.stages.prepare import prepare
from rnnzoo.pipeline.stages.train import make_schedule, train
from rnnzoo.pipeline.tasks import make_task
from tests.pipeline.conftest import tiny_params, write_params

EVERY = 3


@pytest.mark.parametrize("name", ["add-janet", "vec-unfolded"])
def test_the_model_kept_is_the_best_on_valid_and_its_test_figures_are_reported(workdir: Path, name: str):
    params = tiny_params()
    params["train"].update(steps=10, eval_every=EVERY)
    loaded = config.load(write_params(workdir / "params.yaml", params))
    prepare(loaded, name)
    train(loaded, name, progress=False)
    metrics = evaluate(loaded, name)

    valid = json.loads((files.reports_dir(name) / "valid_history.json").read_text())
    assert [record["step"] for record in valid] == [3, 6, 9, 10]  # every EVERY steps, and the last
    record = ModelRecord.from_dict(torch.load(files.model_path(name), weights_only=True))
    spec = record.spec
    key, higher = objectives.selection_metric(spec)
    values = [entry[key] for entry in valid]
    best = values.index(max(values) if higher else min(values))  # the first of equals, as training keeps it
    assert record.selected_step == valid[best]["step"] == metrics["selected_step"]
    assert record.selected_on == f"valid.{key}"
    # The saved weights are the selected model's: evaluate recomputes its valid figures.
    assert metrics[f"valid.{key}"] == pytest.approx(valid[best][key], rel=1e-6)
    # The test split is reported, and computed on the test split (not a copy of valid).
    task = make_task(loaded.experiment(name).task, loaded.experiment(name).task_options)
    splits = files.load_torch(files.dataset_path(name), "dataset", "prepare")
    model = record.build()
    expected_test = objectives.split_metrics(model, task, splits["test"], loaded.evaluate.batch_size)
    assert metrics["test.loss"] == pytest.approx(expected_test["loss"], rel=1e-6)
    assert metrics["test.loss"] != metrics["valid.loss"]

    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    curve = mlflow.MlflowClient().get_metric_history(run.info.run_id, "valid.loss")
    assert sorted(m.step for m in curve) == [3, 6, 9, 10], "one point an evaluation; evaluate adds none"
    assert "test.loss" in run.data.metrics


def test_without_eval_every_the_last_model_is_kept_and_no_curve_is_logged(workdir: Path):
    loaded = config.load(workdir / "params.yaml")
    prepare(loaded, "add-janet")
    train(loaded, "add-janet", progress=False)
    evaluate(loaded, "add-janet")
    assert json.loads((files.reports_dir("add-janet") / "valid_history.json").read_text()) == []
    assert "selected_step" not in torch.load(files.model_path("add-janet"), weights_only=True)
    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "valid.loss")]
    assert steps == [12], "the one evaluation is placed at the last step"


@pytest.mark.parametrize(
    "start, every, decay, expected",
    [
        (0, 3, 0.5, {0: 1.0, 2: 1.0, 3: 0.5, 5: 0.5, 6: 0.25, 9: 0.125}),  # IndRNN: x0.1 every 20k steps, in small
        (4, 2, 0.1, {0: 1.0, 5: 1.0, 6: 0.1, 7: 0.1, 8: 0.01}),  # RHN: decay an epoch after a starting epoch
    ],
)
def test_the_step_schedule_decays_by_whole_periods_past_its_start(start: int, every: int, decay: float, expected: dict[int, float]):
    cfg = TrainConfig(steps=100, lr=1.0, schedule="step", lr_decay=decay, lr_decay_every=every, lr_decay_start=start)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    schedule = make_schedule(optimizer, cfg)
    seen = {}
    for step in range(max(expected) + 1):
        seen[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
    assert {step: pytest.approx(seen[step]) for step in expected} == expected


def test_the_default_step_schedule_is_unchanged():
    cfg = TrainConfig(steps=8, lr=1.0, schedule="step")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    schedule = make_schedule(optimizer, cfg)
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize(
    "key, value, allowed",
    [("eval_every", -1, "an integer >= 0"), ("lr_decay", 0, "a number in (0, 1]"), ("lr_decay", 1.5, "a number in (0, 1]"),
     ("lr_decay_every", 2.5, "an integer >= 0"), ("lr_decay_start", -3, "an integer >= 0")],
)
def test_bad_validation_and_decay_params_are_named(workdir: Path, key: str, value: float, allowed: str):
    params = tiny_params()
    params["train"][key] = value
    with pytest.raises(ConfigError) as caught:
        config.load(write_params(workdir / "params.yaml", params))
    assert f"train.{key}" in str(caught.value) and allowed in str(caught.value)
