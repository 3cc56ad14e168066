"""Where stage outputs live, and writing them so no half-written file is ever left behind."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import struct
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

DATA_DIR = Path("data")
MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of the file at ``path`` by ``algorithm`` ("md5", "sha256"), read in 1 MiB
    chunks. An identity check (download checksums, dataset digests), not a security one."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_path(experiment: str) -> Path:
    return DATA_DIR / experiment / "dataset.pt"


def model_path(experiment: str) -> Path:
    return MODELS_DIR / experiment / "model.pt"


def onnx_dir(experiment: str) -> Path:
    return MODELS_DIR / experiment / "onnx"


def checkpoint_path(experiment: str) -> Path:
    # Not a DVC output: it only serves `--resume` and is checked against the params hash.
    return MODELS_DIR / experiment / "checkpoint" / "last.pt"


def remove_checkpoint(experiment: str) -> None:
    """Remove the experiment's checkpoint, and its folder once empty (a finished run leaves none)."""
    path = checkpoint_path(experiment)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # missing, or holding something else: kept
        path.parent.rmdir()


def reports_dir(experiment: str) -> Path:
    return REPORTS_DIR / experiment


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (its return value unused), then rename it into place."""
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


def save_torch(obj: Any, path: Path) -> Path:
    # Serialised in memory, written by Python: torch.save's own writer reports a full disk as a
    # RuntimeError ("iostream error"); Python's raises OSError with its errno and the file's name.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def write_text(text: str, path: Path) -> Path:
    """``path`` holding ``text`` (UTF-8), written whole or not at all."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(obj: Any, path: Path) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


# What torch.load raised, weights_only=True, on 20,000 corrupted or foreign files (a fuzz run):
# each means "this is not a file we wrote", never a bug here. OSError: the file cannot be read.
UNREADABLE = (
    OSError, EOFError, RuntimeError, pickle.UnpicklingError, struct.error, ValueError, TypeError, KeyError, IndexError,
    AttributeError, AssertionError, OverflowError,
)
# What each stage output must hold, as the stages after it read it (the model's: ModelRecord's
# fields without defaults, in pipeline/model_record.py; a test holds the two equal).
MODEL_KEYS = ("state_dict", "cell", "hidden_size", "cell_options", "model_options", "spec", "params_hash")
CHECKPOINT_KEYS = (  # all that train --resume reads: a checkpoint from before a key was added is refused, not a KeyError
    "params_hash", "model", "optimizer", "schedule", "step", "history", "window_loss", "window_first_step",
    "valid_history", "best_step", "best_value", "best_model", "carries_state", "ranks",
)
# Every task's splits: train fits, valid selects a checkpoint, test reports. A dataset from before
# the test split is refused (remade by prepare), so no stage meets one without it.
SPLITS = ("train", "valid", "test")
SPLIT_TENSORS = ("x", "target")


def cut(text: str, limit: int = 80) -> str:
    """``text`` shortened to ``limit`` characters for an error message."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return cut(f"a dict with keys {', '.join(map(repr, obj)) or 'none'}")
    name = type(obj).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _keys_problem(obj: Any, keys: tuple[str, ...], dicts: tuple[str, ...] = ()) -> str | None:
    """What is wrong with ``obj`` as a dict holding ``keys`` (those in ``dicts`` dicts themselves), or None."""
    if not isinstance(obj, dict) or not all(key in obj for key in keys):
        return f"expected a dict with the keys {', '.join(keys)}, got {_describe(obj)}"
    wrong = [key for key in dicts if not isinstance(obj[key], dict)]
    return f"{wrong[0]} is {_describe(obj[wrong[0]])}, expected a dict" if wrong else None


def _dataset_problem(obj: Any) -> str | None:
    """What is wrong with ``obj`` as prepare's dataset (``{split: {name: tensor}}``), or None."""
    problem = _keys_problem(obj, SPLITS, SPLITS)
    for split in SPLITS if problem is None else ():
        tensors = obj[split]
        if not all(isinstance(tensors.get(name), torch.Tensor) for name in SPLIT_TENSORS):
            return f"split {split} is {_describe(tensors)}, expected the tensors {', '.join(SPLIT_TENSORS)}"
        x, target = tensors["x"], tensors["target"]
        if x.dim() == 0 or target.dim() == 0 or len(x) == 0 or len(x) != len(target):
            return f"split {split} has x {tuple(x.shape)} and target {tuple(target.shape)}, expected as many examples (>= 1) in each"
    return problem


def _model_problem(obj: Any) -> str | None:
    problem = _keys_problem(obj, MODEL_KEYS, ("state_dict", "cell_options", "model_options", "spec"))
    if problem is None and "head" not in obj["spec"]:
        return f"spec is {_describe(obj['spec'])}, expected one with a head"
    return problem


# A stage output's kind (load_torch's ``what``) -> the check of what it holds.
PROBLEMS = {
    "dataset": _dataset_problem,
    "model": _model_problem,
    "checkpoint": lambda obj: _keys_problem(obj, CHECKPOINT_KEYS),
}


# torch.load's advice around the cause: it suggests weights_only=False, which this project never uses.
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _reason(error: BaseException) -> str:
    """What is wrong with the file, from the error torch.load raised on it."""
    if isinstance(error, EOFError):
        return "it is empty or cut short"
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line.startswith(_BOILERPLATE)]
    text = lines[0] if lines else ""
    if isinstance(error, (OSError, RuntimeError, pickle.UnpicklingError)) and text:  # these say what they met
        return cut(text)
    return cut(f"not a torch.save file: {type(error).__name__} {text}".strip())


def require_file(path: Path, what: str, stage_hint: str) -> None:
    """Raise FileNotFoundError naming ``path`` and the command that makes it, unless it is a file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist: run `{stage_hint}` first")


def load_torch(path: Path, what: str, stage_hint: str) -> Any:
    """Load a stage's output, tensors and plain data only (``weights_only``: a crafted file runs no code).

    A missing file names the stage that makes it; a file that cannot be read, or that does not
    hold what a ``what`` file holds (a dataset's splits, a model's record), raises a ValueError
    naming the file and the command that remakes it.
    """
    require_file(path, what, stage_hint)
    try:
        with warnings.catch_warnings():  # a damaged file draws torch's warnings ("pickle protocol 208") before its error
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE as error:
        problem: str | None = f"cannot read it: {_reason(error)}"
    else:
        problem = PROBLEMS[what](obj) if what in PROBLEMS else None
    if problem is not None:
        raise ValueError(f"{path} is not a {what} that `{stage_hint}` writes ({problem}): run `{stage_hint}` to remake it")
    return obj


def load_json(path: Path, what: str, stage_hint: str, kind: type = dict, numbers: tuple[str, ...] = (), empty: bool = False) -> Any:
    """Load a stage's JSON output (``kind``: the top-level type it must have; ``numbers``: keys that
    must hold numbers, in the dict or in every record of the list; ``empty``: whether an empty list
    is valid).

    A missing file names the stage that makes it; one that is not JSON of that kind raises a
    ValueError naming the file and the command that remakes it.
    """
    require_file(path, what, stage_hint)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        problem: str | None = f"cannot read it: {cut(str(error))}"
    else:
        problem = None if isinstance(obj, kind) else f"it holds a {type(obj).__name__}, not a {kind.__name__}"
    if problem is None and kind is list and not obj and not empty:
        problem = "it is empty"
    if problem is None and numbers:
        for record in obj if kind is list else [obj]:
            if not isinstance(record, dict) or not all(_is_number(record.get(key)) for key in numbers):
                problem = f"expected {'records' if kind is list else 'a dict'} with numbers under {', '.join(numbers)}, found {cut(repr(record))}"
                break
    if problem is not None:
        raise ValueError(f"{path} is not a {what} that `{stage_hint}` writes ({problem}): run `{stage_hint}` to remake it")
    return obj


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
