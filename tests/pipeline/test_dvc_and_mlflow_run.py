"""End to end in a temp copy of the project: `dvc repro` and `mlflow run .`, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.pipeline.conftest import tiny_params, write_params
from tests.project_copy import copy_project

BIN = Path(sys.executable).parent
PROJECT_FILES = ("rnnzoo", "cells", "pipeline", "dvc.yaml", "MLproject", "conda.yaml", "pyproject.toml")


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A git + DVC repository holding a copy of the project and a tiny params.yaml."""
    copy = copy_project(tmp_path / "project", PROJECT_FILES)
    write_params(copy / "params.yaml", tiny_params())
    (copy / ".gitignore").write_text("/data/\n/models/\n/reports/\n/mlflow.db\n/mlruns/\n/mlartifacts/\n")
    env = {
        **os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(copy),
        "MLFLOW_TRACKING_URI": f"sqlite:///{copy / 'mlflow.db'}", "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }
    # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID into this process's environment: an
    # earlier in-process stage must not choose the experiment of these commands.
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leaked, None)
    for command in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(command, cwd=copy, env=env, check=True, capture_output=True)
    return copy, env


def _repro(copy: Path, env: dict[str, str]) -> list[str]:
    """Run `dvc repro`; return the stages it ran."""
    result = subprocess.run([str(BIN / "dvc"), "repro"], cwd=copy, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return re.findall(r"Running stage '([^']+)'", result.stdout)


@pytest.mark.slow  # 160 s: the default run stays under 10 minutes on 2 cores
def test_dvc_repro_runs_every_stage_then_only_what_changed(project: tuple[Path, dict[str, str]]) -> None:
    copy, env = project
    experiments = list(tiny_params()["experiments"])
    ran = _repro(copy, env)
    assert sorted(ran) == sorted(f"{stage}@{name}" for stage in ("prepare", "train", "evaluate", "export", "bench") for name in experiments)
    for name in experiments:
        assert (copy / "reports" / name / "metrics.json").is_file()
        assert list((copy / "models" / name / "onnx").glob("*.onnx"))
    assert _repro(copy, env) == [], "a second repro must do nothing"
    report = subprocess.run([str(BIN / "rnnzoo"), "report"], cwd=copy, env=env, capture_output=True, text=True, check=False)
    assert report.returncode == 0, report.stdout + report.stderr
    overview = (copy / "reports" / "bench_onnxruntime.md").read_text()
    assert all(f"| {name} |" in overview for name in experiments) and "bench_onnxruntime.md" in report.stdout

    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["experiments"]["add-janet"]["train"]["lr"] = 0.02
    write_params(copy / "params.yaml", params)
    assert sorted(_repro(copy, env)) == ["bench@add-janet", "evaluate@add-janet", "export@add-janet", "train@add-janet"]

    metrics = subprocess.run(
        [str(BIN / "dvc"), "metrics", "show", "--json"], cwd=copy, env=env, capture_output=True, text=True, check=False
    )
    assert metrics.returncode == 0 and "valid.loss" in metrics.stdout and "bench.cpu.batch1_p50_ms" in metrics.stdout
    plots = subprocess.run(
        [str(BIN / "dvc"), "plots", "show", "--json"], cwd=copy, env=env, capture_output=True, text=True, check=False
    )
    assert plots.returncode == 0 and "train_history.json" in plots.stdout

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["rnnzoo-adding", "rnnzoo-mnist_vector"], output_format="list")
    by_experiment = sorted(run.data.tags["rnnzoo.experiment"] for run in runs)
    assert by_experiment == ["add-janet", "add-janet", "vec-unfolded"], "a changed lr is a new run; the rest reopen theirs"
    assert all(run.info.status == "FINISHED" for run in runs)


@pytest.mark.slow  # 75 s (mlflow run starts rnnzoo run, all five stages): the default run keeps to its 10 minutes
def test_mlflow_run_records_one_run_with_every_stage(project: tuple[Path, dict[str, str]]) -> None:
    copy, env = project
    # As the README has it, with no --experiment-name: the invocation's run is in MLflow's Default experiment.
    command = [str(BIN / "mlflow"), "run", ".", "--env-manager", "local", "-P", "experiment=add-janet"]
    result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1, [(r.info.experiment_id, r.data.tags.get("rnnzoo.stage")) for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert {f"rnnzoo.stage.{stage}" for stage in ("prepare", "train", "evaluate", "export", "bench")} <= set(run.data.tags)
    assert "valid.loss" in run.data.metrics and run.data.params["cell"] == "janet"


def _dvc(copy: Path, env: dict[str, str], *arguments: str) -> str:
    result = subprocess.run([str(BIN / "dvc"), *arguments], cwd=copy, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"dvc {' '.join(arguments)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow  # about 3 minutes on 2 cores; CI runs it (make test-long) after the default run
def test_a_queued_grid_runs_in_parallel_and_dvc_and_mlflow_both_list_its_results(project: tuple[Path, dict[str, str]]) -> None:
    """One experiment, queued to its evaluate stage: export and bench add minutes and nothing to a
    grid's metrics. Not checked here: which other experiments' stages a queued run without a target
    reruns (the dvc repro test checks, in the workspace, that a change reruns only its experiment)."""
    copy, env = project
    params = tiny_params()
    del params["experiments"]["vec-unfolded"]
    params["experiments"]["add-janet"]["train"] = {"lr": 0.01, "steps": 12}  # -S sets a key that exists, as in params.yaml
    write_params(copy / "params.yaml", params)
    _dvc(copy, env, "repro", "evaluate@add-janet")
    subprocess.run(["git", "add", "-A"], cwd=copy, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "baseline"], cwd=copy, env=env, check=True)

    # A 2 x 2 grid (each -S a list of values), named at queue time, run two at a time.
    _dvc(copy, env, "exp", "run", "--queue", "-n", "grid", "-S", "experiments.add-janet.train.lr=0.02,0.03",
         "-S", "experiments.add-janet.train.steps=4,8", "evaluate@add-janet")
    _dvc(copy, env, "exp", "run", "--run-all", "-j", "2")

    shown = json.loads(_dvc(copy, env, "exp", "show", "--json"))
    baseline = next(commit for commit in shown if commit["rev"] != "workspace")
    experiments = [rev for group in baseline["experiments"] or [] for rev in group["revs"]]
    names = sorted(rev["name"] for rev in experiments)
    assert len(names) == 4 and all(name.startswith("grid") for name in names), names
    for rev in [baseline, *experiments]:  # every experiment's metrics, not an error: they are in its commit
        metrics = rev["data"]["metrics"]["reports/add-janet/metrics.json"]
        assert "data" in metrics and "test.loss" in metrics["data"], (rev.get("name"), metrics)
    grid = {(rev["data"]["params"]["params.yaml"]["data"]["experiments"]["add-janet"]["train"]["lr"],
             rev["data"]["params"]["params.yaml"]["data"]["experiments"]["add-janet"]["train"]["steps"]) for rev in experiments}
    assert grid == {(0.02, 4), (0.02, 8), (0.03, 4), (0.03, 8)}

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["rnnzoo-adding"], output_format="list")
    tagged = sorted(run.data.tags.get("rnnzoo.dvc_experiment", "") for run in runs if run.data.tags.get("rnnzoo.dvc_experiment"))
    assert tagged == names, "each queued experiment's MLflow run carries its DVC name, and no other run does"
    assert len(runs) == 1 + 4 and all(run.info.status == "FINISHED" for run in runs)

    # dvc metrics diff: an experiment against the baseline commit, by its name.
    diff = json.loads(_dvc(copy, env, "metrics", "diff", "HEAD", names[0], "--json"))
    changed = diff.get("reports/add-janet/metrics.json", {}).get("test.loss")  # absent where nothing changed
    assert changed and changed["old"] != changed["new"], diff

