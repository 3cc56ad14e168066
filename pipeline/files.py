"""Where stage outputs live, and writing them so no half-written file is ever left behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

DATA_DIR = Path("data")
MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")


def dataset_path(experiment: str) -> Path:
    return DATA_DIR / experiment / "dataset.pt"


def model_path(experiment: str) -> Path:
    return MODELS_DIR / experiment / "model.pt"


def onnx_dir(experiment: str) -> Path:
    return MODELS_DIR / experiment / "onnx"


def checkpoint_path(experiment: str) -> Path:
    # Not a DVC output: it only serves `--resume` and is checked against the params hash.
    return MODELS_DIR / experiment / "checkpoint" / "last.pt"


def reports_dir(experiment: str) -> Path:
    return REPORTS_DIR / experiment


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the block succeeds it replaces ``path`` whole.

    A stage that fails part-way leaves the previous folder as it was, and a file that the new run
    no longer writes does not linger beside the new ones. (Under ``dvc repro`` DVC removes a
    stage's outputs before running it, so there a failure leaves no folder rather than the old one.)
    Between the two renames ``path`` is briefly absent: readers see the old folder, none, or the new.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):  # from a run that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if not path.exists():
            os.replace(tmp, path)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.replace(path, old)  # a rename cannot replace a non-empty folder, so move it aside first
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_torch(obj: Any, path: Path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_json(obj: Any, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def load_torch(path: Path, what: str, stage_hint: str) -> Any:
    """Load a stage's output; a missing file names the stage that makes it."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist: run `{stage_hint}` first")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model_record(experiment: str, params_hash: str) -> Any:
    """The trained model's record, refused if it was trained with other params than ``params_hash``.

    Stages after train label what they write (metrics, ONNX metadata, MLflow runs) with the
    current params: a model trained under other params would be mislabelled.
    """
    record = load_torch(model_path(experiment), "model", f"rnnzoo train {experiment}")
    if record["params_hash"] != params_hash:
        raise ValueError(
            f"{model_path(experiment)} was trained with other params (hash {record['params_hash']}, now {params_hash}): "
            f"run `rnnzoo train {experiment}` first"
        )
    return record
