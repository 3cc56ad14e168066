"""Bad params fail before any work, with one message naming the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rnnzoo.pipeline import config
from rnnzoo.pipeline.cli import app
from tests.pipeline.conftest import tiny_params, write_params

runner = CliRunner()


def _mutated(mutate) -> dict:
    params = tiny_params()
    mutate(params)
    return params


BAD_PARAMS = {
    "unknown cell": (lambda p: p["experiments"]["add-janet"].update(cell="gru"), ["experiments.add-janet.cell", "'gru'", "janet"]),
    "unknown task": (lambda p: p["experiments"]["add-janet"].update(task="imagenet"), ["experiments.add-janet.task", "imagenet", "adding"]),
    "negative lr": (lambda p: p["train"].update(lr=-0.1), ["train.lr", "-0.1", "> 0"]),
    "zero width": (lambda p: p["experiments"]["add-janet"].update(hidden_size=0), ["hidden_size", "0", ">= 1"]),
    "missing section": (lambda p: p.pop("evaluate"), ["'evaluate'", "missing"]),
    "wrong type": (lambda p: p["train"].update(steps="many"), ["train.steps", "'many'", "integer"]),
    "unknown key": (lambda p: p["train"].update(learning_rate=0.1), ["train.learning_rate", "allowed"]),
    "experiment lr": (lambda p: p["experiments"]["add-janet"]["train"].update(lr=0), ["experiments.add-janet.train.lr", "0"]),
    "bad device": (lambda p: p["train"].update(device="tpu"), ["train.device", "tpu", "cuda"]),
    "unknown cell option": (lambda p: p["experiments"]["add-janet"]["cell_options"].update(max_timscale=3), ["cell_options.max_timscale", "max_timescale"]),
    "bad task option": (lambda p: p["experiments"]["add-janet"]["task_options"].update(length=1), ["task_options", "length", "1"]),
    "unknown model option": (lambda p: p["experiments"]["add-janet"]["model_options"].update(tie=True), ["model_options.tie", "tie_weights"]),
    "bench without batch 1": (lambda p: p["bench"].update(batch_sizes=[4, 8]), ["bench.batch_sizes", "includes 1"]),
    "vector cell on sequences": (lambda p: p["experiments"]["add-janet"].update(cell="unfolded_lstm", cell_options={}), ["unfolded_lstm", "vector task"]),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_params_are_named_before_any_work(case: str, tmp_path: Path) -> None:
    mutate, expected = BAD_PARAMS[case]
    path = write_params(tmp_path / "params.yaml", _mutated(mutate))
    with pytest.raises(config.ConfigError) as error:
        config.load(path)
    for fragment in expected:
        assert fragment in str(error.value), (fragment, str(error.value))


def test_cli_reports_bad_params_in_one_line_and_writes_nothing(workdir: Path) -> None:
    result = runner.invoke(app, ["prepare", "--set", "train.lr=-1"])
    assert result.exit_code == 2
    assert "train.lr" in result.output and "-1" in result.output
    assert not (workdir / "data").exists()


def test_unknown_experiment_is_named(workdir: Path) -> None:
    result = runner.invoke(app, ["train", "no-such-experiment"])
    assert result.exit_code == 2
    assert "no-such-experiment" in result.output and "add-janet" in result.output


def test_unknown_stage_is_rejected() -> None:
    result = runner.invoke(app, ["deploy"])
    assert result.exit_code != 0
    assert "deploy" in result.output


def test_set_override_changes_a_nested_value(tmp_path: Path) -> None:
    path = write_params(tmp_path / "params.yaml", tiny_params())
    loaded = config.load(path, ["experiments.add-janet.train.lr=0.5", "train.steps=3"])
    assert loaded.experiment("add-janet").train.lr == 0.5
    assert loaded.experiment("add-janet").train.steps == 3
    assert loaded.experiment("vec-unfolded").train.lr == 0.01


def test_set_override_without_equals_is_rejected(tmp_path: Path) -> None:
    path = write_params(tmp_path / "params.yaml", tiny_params())
    with pytest.raises(config.ConfigError, match="KEY=VALUE"):
        config.load(path, ["train.lr"])


def test_bad_task_option_is_named(tmp_path: Path) -> None:
    from rnnzoo.pipeline.tasks import TaskError, make_task

    with pytest.raises(TaskError, match="length"):
        make_task("adding", {"length": 1})


def test_default_params_file_is_valid() -> None:
    loaded = config.load(Path(__file__).resolve().parents[2] / "params.yaml")
    from rnnzoo import cells
    assert {exp.cell for exp in loaded.experiments.values()} == set(cells.names())


@pytest.mark.parametrize("profile", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "profiles").glob("*.yaml")))
def test_every_profile_is_valid_and_builds_its_models(profile: str) -> None:
    from rnnzoo import cells
    from rnnzoo.pipeline.tasks import make_task

    loaded = config.load(Path(__file__).resolve().parents[2] / "profiles" / profile)
    for exp in loaded.experiments.values():
        make_task(exp.task, exp.task_options)
        allowed = set(cells.options(exp.cell))
        assert set(exp.cell_options) <= allowed, (exp.name, set(exp.cell_options) - allowed)
