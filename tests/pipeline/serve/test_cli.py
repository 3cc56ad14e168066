"""`rnnzoo serve` and `rnnzoo load-test` as a user types them: what cannot work ends in one `error:` line, never a traceback."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
import uvicorn
from onnx import TensorProto, helper
from typer.testing import CliRunner

from rnnzoo.pipeline.cli import app
from rnnzoo.pipeline.serve.connections import uvicorn_options
from tests.pipeline.conftest import empty_store
from tests.pipeline.serve.asgi import call


def _serve(args: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None) -> tuple[Any, str, list[Any]]:
    """``rnnzoo serve ARGS`` with uvicorn.run stubbed: the result, its output on one line, and what would have been served."""
    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **options: served.append((application, options)))
    result = CliRunner().invoke(app, ["serve", *args], env=env)
    return result, " ".join(result.output.split()), served  # rich wraps long lines


def _assert_one_error_line(result: Any, output: str, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "error: " in output and "Traceback" not in result.output  # (MLflow may log a line of its own first)
    for fragment in fragments:
        assert fragment in output


def _not_onnx(folder: Path, exported: Any) -> str:
    (folder / "notes.txt").write_text("not a model\n")
    return str(folder / "notes.txt")


def _foreign_onnx(folder: Path, exported: Any) -> str:
    """A valid ONNX file that `rnnzoo export` did not write: one Identity node."""
    a, b = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in "ab")
    graph = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "foreign", [a], [b])
    onnx.save(helper.make_model(graph), str(folder / "foreign.onnx"))
    return str(folder / "foreign.onnx")


def _named(model: str) -> Callable[..., str]:
    return lambda folder, exported: model


# case -> (the MODEL argument, made in a temp folder; what the error says)
UNSERVABLE: dict[str, tuple[Callable[..., str], list[str]]] = {
    "a file that is not ONNX": (_not_onnx, ["notes.txt is not an ONNX model onnxruntime can load", "INVALID_PROTOBUF"]),
    "a path that does not exist": (_named("../some/file"), ["no model at '../some/file'", "pass an ONNX file"]),
    "a folder without a model": (lambda folder, exported: str(folder), ["no model at", "sequence.onnx or vector.onnx"]),
    "an ONNX file rnnzoo did not write": (_foreign_onnx, ["is not a graph `rnnzoo export` wrote", "inputs ['a']"]),
    "the one-step graph": (lambda folder, exported: str(exported("step graph")), ["is the one-step graph (step.onnx): serve sequence.onnx"]),
    "an unknown registered model": (_named("models:/unknown/1"), ["cannot fetch models:/unknown/1 from MLflow at sqlite:", "unknown"]),
    "an unknown run": (_named("runs:/0123456789abcdef/onnx"), ["cannot fetch runs:/0123456789abcdef/onnx from MLflow", "not found"]),
}


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty tracking store, shared by the module's tests (they only read it)."""
    return empty_store(tmp_path_factory.mktemp("mlflow"))


@pytest.mark.parametrize("case", sorted(UNSERVABLE))
def test_serve_says_in_one_line_why_it_cannot_serve_a_model(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           exported: Callable[[str], Path], mlflow_uri: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    make, fragments = UNSERVABLE[case]
    result, output, served = _serve([make(tmp_path, exported)], monkeypatch)
    _assert_one_error_line(result, output, 1, *fragments)
    assert not served


# how the key is given -> (arguments after the model, environment, what the error says)
UNWORKABLE_KEYS: dict[str, tuple[list[str], dict[str, str], str]] = {
    "--api-key ''": (["--api-key", ""], {}, "--api-key is empty: that would serve without authentication"),
    "RNNZOO_API_KEY=''": ([], {"RNNZOO_API_KEY": ""}, "--api-key is empty: that would serve without authentication"),
    "--api-key with a non-ASCII character": (["--api-key", "clé"], {}, "--api-key has a non-ASCII or control character at position 2"),
    "RNNZOO_API_KEY with a non-ASCII character": ([], {"RNNZOO_API_KEY": "clé"}, "--api-key has a non-ASCII or control character"),
}


@pytest.mark.parametrize("case", sorted(UNWORKABLE_KEYS))
def test_serve_refuses_an_api_key_that_cannot_work_before_serving(case: str, monkeypatch: pytest.MonkeyPatch, exported: Callable[[str], Path]) -> None:
    arguments, env, fragment = UNWORKABLE_KEYS[case]
    result, output, served = _serve([str(exported("adding")), *arguments], monkeypatch, env)
    _assert_one_error_line(result, output, 2, fragment)
    assert not served


def test_serve_hands_its_timeouts_and_limits_to_uvicorn_and_the_app(monkeypatch: pytest.MonkeyPatch, exported: Callable[[str], Path]) -> None:
    result, _, served = _serve([str(exported("adding")), "--body-timeout", "0.25", "--idle-timeout", "1.5", "--limit-concurrency", "7",
                                     "--max-body-bytes", "500"], monkeypatch)
    assert result.exit_code == 0, result.output
    (application, options), = served
    assert options == {"host": "127.0.0.1", "port": 8000, **uvicorn_options(idle_timeout=1.5, limit_concurrency=7)}
    stalled = call(application, "POST", "/predict", chunks=[], headers=[(b"content-length", b"10")], stall=True)
    assert stalled.status == 408 and "within 0.25 s" in stalled.detail
    assert call(application, "POST", "/predict", raw=b" " * 501).status == 413


def test_serve_says_when_a_model_cannot_stream(monkeypatch: pytest.MonkeyPatch, exported: Callable[[str], Path]) -> None:
    result, output, served = _serve([str(exported("bidirectional lstm (ONNX LSTM)"))], monkeypatch)
    assert result.exit_code == 0 and served
    assert "no streaming sessions: this model is bidirectional: its outputs depend on later steps" in output


def test_load_test_against_no_server_says_so_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["load-test", "http://127.0.0.1:9", "--seconds", "0.5", "--out", str(tmp_path / "load.json")])
    output = " ".join(result.output.split())
    _assert_one_error_line(result, output, 1, "cannot load-test http://127.0.0.1:9", "Connection refused")
    assert not (tmp_path / "load.json").exists()


def _most_workers() -> int:
    from rnnzoo.pipeline.serve.workers import WORKERS_PER_CPU, usable_cpus

    return WORKERS_PER_CPU * usable_cpus()


@pytest.mark.parametrize("workers", ["0", "-2", "too many"])
def test_serve_refuses_a_workers_count_it_cannot_run_in_one_line(workers: str, monkeypatch: pytest.MonkeyPatch,
                                                                  exported: Callable[[str], Path]) -> None:
    value = str(_most_workers() + 1) if workers == "too many" else workers
    result, output, served = _serve([str(exported("adding")), "--workers", value], monkeypatch)
    _assert_one_error_line(result, output, 2, f"--workers is {value}: it must be from 1 to {_most_workers()}")
    assert not served


def test_serve_with_workers_runs_the_worker_factory_over_one_session_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                           exported: Callable[[str], Path]) -> None:
    """uvicorn gets the factory by import string; two apps it builds (two workers) share every session."""
    from rnnzoo.pipeline.serve.workers import SETTINGS_VARIABLE, WORKER_APP, worker_app

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    seen: dict[str, Any] = {}

    def run(application: Any, **options: Any) -> None:
        first, second = worker_app(), worker_app()
        opened = call(first, "POST", "/sessions").json()["session_id"]
        seen["steps"] = [call(app, "POST", f"/sessions/{opened}/steps", {"steps": [[0.5, 1.0]]}).json()["steps_seen"] for app in (second, first)]
        seen["limit"] = [call(second, "POST", "/sessions").status, call(first, "POST", "/sessions").status]
        seen["deleted"] = [call(first, "DELETE", f"/sessions/{opened}").status, call(second, "POST", f"/sessions/{opened}/steps",
                                                                                       {"steps": [[0.5, 1.0]]}).status]
        seen["health"] = call(second, "GET", "/health").json()
        seen["store"] = list(tmp_path.glob("rnnzoo-serve-*/sessions.db"))
        seen["served"] = (application, options)

    monkeypatch.setattr(uvicorn, "run", run)
    result = CliRunner().invoke(app, ["serve", str(exported("adding")), "--workers", "2", "--max-sessions", "2", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert "in 2 worker processes on http://127.0.0.1:8123" in " ".join(result.output.split())
    application, options = seen["served"]
    assert application == WORKER_APP
    assert options == {"factory": True, "workers": 2, "host": "127.0.0.1", "port": 8123, **uvicorn_options(idle_timeout=5.0, limit_concurrency=256)}
    assert seen["steps"] == [1, 2]  # stepped on one, then the other, in order
    assert seen["limit"] == [201, 429]  # the second worker's session filled the limit of 2 for the first
    assert seen["deleted"] == [204, 404]
    assert seen["health"]["sessions"] == 1 and seen["health"]["worker"] == os.getpid()
    assert len(seen["store"]) == 1
    assert not list(tmp_path.glob("rnnzoo-serve-*")) and SETTINGS_VARIABLE not in os.environ  # gone once the server stops
