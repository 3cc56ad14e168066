"""A damaged stage output (garbage, empty, cut short, crafted, or wrongly shaped) is refused where it
is read, in one line naming the file, what it should be and the command that remakes it: never a
traceback, a bare "Aborted." or a KeyError later. Through the CLI, at every place a stage reads one."""

from __future__ import annotations

import io
import os
import pickle
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rnnzoo.pipeline import config, files
from rnnzoo.pipeline.cli import app
from rnnzoo.pipeline.model import build_model
from rnnzoo.pipeline.model_record import ModelRecord
from rnnzoo.pipeline.tasks import make_task
from tests.pipeline.conftest import tiny_params, write_params
from tests.pipeline.test_bad_input_params import refused

runner = CliRunner()
EXP = "add-janet"
MARKER = "code_ran.txt"


class _Payload:
    """Unpickling this would create MARKER: a file that runs code when loaded with weights_only=False."""

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {MARKER}",))


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


GARBAGE: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "text": lambda: b"not a torch file\n",
    "random bytes": lambda: random.Random(0).randbytes(4096),
    "cut short": lambda: _torch_bytes({"train": {"x": torch.ones(64, 6, 2)}})[:300],
    "code": lambda: pickle.dumps(_Payload(), protocol=2),
    "a list": lambda: _torch_bytes([1, 2, 3]),
    "other keys": lambda: _torch_bytes({"weights": torch.ones(2)}),
}
# Shaped like the other file: a dataset where a model belongs, and the other way round.
_TEST = {"x": torch.ones(2), "target": torch.ones(2)}  # a good test split: each case is refused for its own damage
WRONG_SHAPE = {
    "dataset": {
        "no valid split": {"train": {"x": torch.ones(4, 6, 2), "target": torch.ones(4, 1)}, "test": _TEST},
        "split without target": {"train": {"x": torch.ones(4, 6, 2)}, "valid": {"x": torch.ones(4, 6, 2)}, "test": _TEST},
        "x and target disagree": {
            "train": {"x": torch.ones(4, 6, 2), "target": torch.ones(3, 1)}, "valid": {"x": torch.ones(2), "target": torch.ones(2)}, "test": _TEST,
        },
        "empty split": {"train": {"x": torch.ones(0, 6, 2), "target": torch.ones(0, 1)}, "valid": {"x": torch.ones(2), "target": torch.ones(2)}, "test": _TEST},
    },
    "model": {
        "record without spec": {"state_dict": {}, "cell": "janet", "hidden_size": 8, "cell_options": {}, "model_options": {}, "params_hash": "x"},
        "spec not a dict": {"state_dict": {}, "cell": "janet", "hidden_size": 8, "cell_options": {}, "model_options": {}, "spec": 3, "params_hash": "x"},
    },
}


def _write_good_outputs(loaded: config.Config) -> None:
    """What prepare and train would leave (without their MLflow runs), and bench's ONNX file."""
    exp = loaded.experiment(EXP)
    task = make_task(exp.task, exp.task_options)
    splits = task.prepare(None, loaded.prepare.seed)
    files.save_torch(splits, files.dataset_path(EXP))
    spec = task.spec(splits)
    files.save_torch(ModelRecord.of(exp, spec, build_model(exp.cell, spec, exp.hidden_size, **exp.cell_options)).to_dict(), files.model_path(EXP))
    files.onnx_dir(EXP).mkdir(parents=True)
    (files.onnx_dir(EXP) / "sequence.onnx").write_bytes(b"bench opens it only after reading the model")


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # never reached: refused first
    _write_good_outputs(config.load(write_params(tmp_path / "params.yaml", tiny_params())))
    return tmp_path


# Every place a stage reads dataset.pt or model.pt (and train --resume its checkpoint): the
# command, the file it reads, what that file is, and the command that remakes it.
PLACES = {
    "train reads the dataset": (["train", EXP], files.dataset_path(EXP), "dataset", f"rnnzoo prepare {EXP}"),
    "evaluate reads the model": (["evaluate", EXP], files.model_path(EXP), "model", f"rnnzoo train {EXP}"),
    "evaluate reads the dataset": (["evaluate", EXP], files.dataset_path(EXP), "dataset", f"rnnzoo prepare {EXP}"),
    "export reads the model": (["export", EXP], files.model_path(EXP), "model", f"rnnzoo train {EXP}"),
    "bench reads the model": (["bench", EXP], files.model_path(EXP), "model", f"rnnzoo train {EXP}"),
    "train --resume reads the checkpoint": (["train", EXP, "--resume"], files.checkpoint_path(EXP), "checkpoint", f"rnnzoo train {EXP}"),
}


def _refused_file(here: Path, place: str, content: bytes) -> str:
    args, path, what, remake = PLACES[place]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    line = refused(runner.invoke(app, args), 1, f"{path} is not a {what} that `{remake}` writes", f"run `{remake}` to remake it")
    assert not (here / MARKER).exists(), "nothing read from disk may run code"
    return line


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
@pytest.mark.parametrize("place", sorted(PLACES))
def test_a_garbage_file_is_named_with_the_command_that_remakes_it(place: str, garbage: str, here: Path) -> None:
    _refused_file(here, place, GARBAGE[garbage]())


@pytest.mark.parametrize("place", sorted(PLACES))
def test_a_file_of_the_other_kind_is_refused_at_load(place: str, here: Path) -> None:
    what = PLACES[place][2]
    other = files.model_path(EXP) if what == "dataset" else files.dataset_path(EXP)
    line = _refused_file(here, place, other.read_bytes())
    assert "expected a dict with the keys" in line


@pytest.mark.parametrize("case", sorted((what, name) for what, shapes in WRONG_SHAPE.items() for name in shapes))
def test_a_wrongly_shaped_file_is_refused_at_load_not_with_a_key_error_later(case: tuple[str, str], here: Path) -> None:
    what, name = case
    place = {"dataset": "train reads the dataset", "model": "export reads the model"}[what]
    line = _refused_file(here, place, _torch_bytes(WRONG_SHAPE[what][name]))
    assert "expected" in line


def test_the_good_files_pass_the_checks(here: Path) -> None:
    """The fixture's files are what the stages write: each loads, so each refusal above is the damage's."""
    assert files.load_torch(files.dataset_path(EXP), "dataset", "prepare").keys() == {"train", "valid", "test"}
    assert ModelRecord.load(EXP, config.load(here / "params.yaml").experiment(EXP).params_hash()).cell == "janet"


# Every place a stage reads another stage's JSON output: the command, the file, what it is, the
# command that remakes it.
JSON_PLACES = {
    "evaluate reads the training history": (
        ["evaluate", EXP], files.reports_dir(EXP) / "train_history.json", "training history", f"rnnzoo train {EXP}"
    ),
}
JSON_GARBAGE = {
    "empty": b"", "text": b"not json\n", "not utf-8": b"\xff\xfe\x00", "wrong kind": b'{"loss": 1}', "no records": b"[]",
    "an empty record": b"[{}]", "a number for a record": b"[1]", "a string for a loss": b'[{"step": 1, "loss": "x"}]',
}


@pytest.mark.parametrize("garbage", sorted(JSON_GARBAGE))
@pytest.mark.parametrize("place", sorted(JSON_PLACES))
def test_a_garbage_json_output_is_named_with_the_command_that_remakes_it(place: str, garbage: str, here: Path) -> None:
    args, path, what, remake = JSON_PLACES[place]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(JSON_GARBAGE[garbage])
    refused(runner.invoke(app, args), 1, f"{path} is not a {what} that `{remake}` writes", f"run `{remake}` to remake it")


@pytest.mark.parametrize("place", sorted(JSON_PLACES))
def test_a_missing_json_output_names_the_stage_that_makes_it(place: str, here: Path) -> None:
    args, path, what, remake = JSON_PLACES[place]
    path.unlink(missing_ok=True)
    refused(runner.invoke(app, args), 1, f"{what} {path} does not exist: run `{remake}` first")


# What `rnnzoo report` reads: each experiment's metrics and bench files.
REPORT_READS = {
    "metrics": (files.reports_dir(EXP) / "metrics.json", "metrics file", f"rnnzoo evaluate {EXP}"),
    "bench": (files.reports_dir(EXP) / "bench.json", "bench file", f"rnnzoo bench {EXP}"),
}
REPORT_GARBAGE = {"text": b"not json", "a list": b"[1]", "missing keys": b'{"detail": {"providers": {"cpu": {}}}}'}


@pytest.mark.parametrize("garbage", sorted(REPORT_GARBAGE))
@pytest.mark.parametrize("read", sorted(REPORT_READS))
def test_report_names_a_garbage_output_with_the_command_that_remakes_it(read: str, garbage: str, here: Path) -> None:
    path, what, remake = REPORT_READS[read]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(REPORT_GARBAGE[garbage])
    result = runner.invoke(app, ["report", EXP])
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    # The metrics table may come first; the error is one line naming the file and its remake.
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{path} is not a {what} that `{remake}` writes" in errors[0]
    assert errors[0].endswith(f"run `{remake}` to remake it")
