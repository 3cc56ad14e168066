"""`dvc exp run -S` sets each experiment's own knobs in params.yaml as the README shows, through
DVC's own override code (the part of `dvc exp run -S` that edits the file)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dvc.utils.hydra import apply_overrides

from rnnzoo.pipeline import config

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(config.load(ROOT / "params.yaml").experiments)


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize(("key", "value"), [("lr", 0.003), ("steps", 7)])
def test_dvc_set_reaches_each_experiments_train_key(tmp_path: Path, name: str, key: str, value: float) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    apply_overrides(params, [f"experiments.{name}.train.{key}={value}"])
    loaded = config.load(params)
    assert getattr(loaded.experiment(name).train, key) == value
    others = [other for other in EXPERIMENTS if other != name]
    before = config.load(ROOT / "params.yaml")
    assert all(loaded.experiment(o).train == before.experiment(o).train for o in others), "only that experiment changes"


def test_dvc_set_of_a_global_train_key_reaches_every_experiment_without_its_own(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    apply_overrides(params, ["train.batch_size=8", "++experiments.adding-janet.train.grad_clip=0.5"])
    loaded = config.load(params)
    assert {loaded.experiment(name).train.batch_size for name in EXPERIMENTS} == {8}
    assert loaded.experiment("adding-janet").train.grad_clip == 0.5


@pytest.mark.parametrize("key", ["lr", "steps"])
def test_a_global_train_override_that_every_experiment_shadows_is_refused(key: str) -> None:
    with pytest.raises(config.ConfigError, match=rf"would change nothing.*experiments\.\S+\.train\.{key}="):
        config.load(ROOT / "params.yaml", [f"train.{key}=3"])
    assert config.load(ROOT / "params.yaml", ["train.batch_size=3"]).experiment(EXPERIMENTS[0]).train.batch_size == 3
