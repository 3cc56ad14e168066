"""Fixtures for pipeline tests: a tiny params file and an isolated working directory."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml


def tiny_params(**experiment_overrides: Any) -> dict[str, Any]:
    """Two fast experiments: a sequence cell and the vector cell."""
    params = {
        "prepare": {"seed": 0, "data_dir": None},
        "train": {"device": "cpu", "seed": 0, "steps": 12, "batch_size": 16, "lr": 0.01, "checkpoint_every": 4, "log_every": 2},
        "evaluate": {"batch_size": 64},
        "bench": {"batch_sizes": [1, 4], "repeats": 3, "warmup": 1, "threads": 1},
        "experiments": {
            "add-janet": {
                "cell": "janet", "task": "adding", "hidden_size": 8, "cell_options": {"max_timescale": 6},
                "task_options": {"length": 6, "train_size": 64, "valid_size": 32}, "model_options": {}, "train": {},
            },
            "vec-unfolded": {
                "cell": "unfolded_lstm", "task": "mnist_vector", "hidden_size": 8, "cell_options": {"depth": 3},
                "task_options": {}, "model_options": {}, "train": {},
            },
        },
    }
    for name, override in experiment_overrides.items():
        params["experiments"][name].update(override)
    return params


def write_params(path: Path, params: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@functools.cache
def _empty_store_template() -> Path:
    """An empty MLflow database, created and migrated once per test process."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    directory = Path(tempfile.mkdtemp(prefix="rnnzoo-empty-store-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    database = directory / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{database}", str(directory / "mlruns")).engine.dispose()
    return database


def empty_store(directory: Path) -> str:
    """``directory/mlflow.db``: an empty MLflow database as MLflow creates it there; its sqlite URI.

    MLflow takes seconds to create and migrate a database (about 4 s a test here, with ~90 tests
    that each start from none), so the tests copy one made once. The default experiment's artifact
    location is the one thing in it that names its directory: set to this one's, as MLflow sets it
    from the working directory (the project's, in these tests). Tests of the pipeline's own first
    use of a store (creation under the lock) delete the copy first.
    """
    database = directory / "mlflow.db"
    shutil.copyfile(_empty_store_template(), database)
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(directory / "mlruns" / "0"),))
    return f"sqlite:///{database}"


def interruptible_project(root: Path, experiments: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Any:
    """A project at ``root`` (the cwd, its own MLflow database) with ``experiments`` prepared: 13
    steps, a record every 3 and a checkpoint every 5, so a checkpoint (step 5) falls mid-window."""
    from rnnzoo.pipeline import config
    from rnnzoo.pipeline.stages.prepare import prepare

    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", empty_store(root))
    params = tiny_params()
    params["train"].update(steps=13, log_every=3, checkpoint_every=5)
    params["experiments"] = experiments
    loaded = config.load(write_params(root / "params.yaml", params))
    for name in experiments:
        prepare(loaded, name)
    return loaded


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp directory as cwd, with its own (empty) MLflow database."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", empty_store(tmp_path))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    write_params(tmp_path / "params.yaml", tiny_params())
    return tmp_path


@pytest.fixture(autouse=True)
def _no_leaked_mlflow_experiment() -> Iterator[None]:
    """mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID to the process: no test inherits another's."""
    yield
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
