"""`rnnzoo serve` as a real uvicorn process on loopback: predictions, streaming sessions, limits, bad requests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from rnnzoo.pipeline import runtime
from rnnzoo.pipeline.serve.connections import uvicorn_options
from rnnzoo.pipeline.serve.load import run_load
from tests.pipeline.serve.served import Server
from tests.pipeline.serve.served import start as _start

KEY = "s3cret"


@pytest.fixture(scope="module")
def adding(exported: Callable[[str], Path]) -> Iterator[Server]:
    path = exported("adding")  # janet on adding: see conftest.MODELS
    yield from _start(path, "--max-length", "40", "--max-body-bytes", "20000", key=KEY)


@pytest.fixture(scope="module")
def language(exported: Callable[[str], Path]) -> Iterator[Server]:
    path = exported("language")  # lstm on ptb
    yield from _start(path, "--max-sessions", "2", "--session-ttl", "2")


def _direct(path: Path, x: np.ndarray, state_c: bool = True) -> list[np.ndarray]:
    session = runtime.open_session(path, runtime.best_provider())  # the provider the server uses
    feeds = {"x": x}
    for spec in session.get_inputs()[1:]:
        feeds[spec.name] = np.zeros((spec.shape[0], x.shape[0], spec.shape[2]), dtype=np.float32)
    return session.run(None, feeds)


def test_every_request_without_the_api_key_gets_401(adding: Server) -> None:
    for route in ("/health", "/metadata", "/docs"):
        assert adding.call("GET", route, key=None)[0] == 401
        assert adding.call("GET", route, key="wrong")[0] == 401
    assert adding.call("POST", "/predict", {"sequences": [[[0.1, 1.0]]]}, key=None)[0] == 401


def test_health_metadata_and_docs(adding: Server) -> None:
    assert adding.call("GET", "/health") == (200, {"status": "ok", "sessions": 0, "streaming": True})
    status, metadata = adding.call("GET", "/metadata")
    assert status == 200 and metadata["cell"] == "janet" and metadata["input_features"] == 2 and "x" in metadata["io"]["inputs"]
    assert metadata["provider"] == runtime.best_provider()  # CUDA where onnxruntime-gpu has a GPU, else the CPU
    assert adding.call("GET", "/docs")[0] == 200


def test_predict_takes_sequences_of_different_lengths(adding: Server) -> None:
    rng = np.random.default_rng(1)
    sequences = [rng.random((length, 2)).astype(np.float32) for length in (3, 7, 3, 1)]
    status, answer = adding.call("POST", "/predict", {"sequences": [s.tolist() for s in sequences], "return_state": True})
    assert status == 200
    for sequence, prediction, state in zip(sequences, answer["predictions"], answer["states"]):
        expected, final = _direct(adding.path, sequence[None])
        np.testing.assert_allclose(prediction, expected[0], atol=1e-6)
        np.testing.assert_allclose(state["state_c"], final[:, 0], atol=1e-6)


def test_streaming_in_pieces_equals_predict_on_the_whole_sequence(adding: Server) -> None:
    sequence = np.random.default_rng(2).random((9, 2)).astype(np.float32)
    _, whole = adding.call("POST", "/predict", {"sequences": [sequence.tolist()]})
    status, opened = adding.call("POST", "/sessions")
    assert status == 201
    route = f"/sessions/{opened['session_id']}/steps"
    for piece in (sequence[:4], sequence[4:5], sequence[5:]):
        status, answer = adding.call("POST", route, {"steps": piece.tolist()})
        assert status == 200
    assert answer["steps_seen"] == 9
    np.testing.assert_allclose(answer["predictions"], whole["predictions"][0], atol=1e-6)
    assert adding.call("DELETE", f"/sessions/{opened['session_id']}")[0] == 204
    assert adding.call("POST", route, {"steps": sequence[:1].tolist()})[0] == 404


BAD_REQUESTS = {
    "wrong feature count": ("/predict", {"sequences": [[[0.1, 0.2, 0.3]]]}, 400, "shape"),
    "wrong rank": ("/predict", {"sequences": [[0.1, 0.2]]}, 400, "shape"),
    "strings": ("/predict", {"sequences": [[["a", "b"]]]}, 400, "is a string; expected a finite number"),
    "NaN": ("/predict", None, 400, "NaN"),
    "no sequences": ("/predict", {"sequences": []}, 400, "empty"),
    "empty sequence": ("/predict", {"sequences": [[]]}, 400, "empty"),
    "too long": ("/predict", {"sequences": [[[0.1, 0.0]] * 41]}, 400, "maximum of 40"),
    "times to a model without them": ("/predict", {"sequences": [[[0.1, 0.0]]], "times": [[0.0]]}, 400, "no timestamps"),
    "missing field": ("/predict", {"values": []}, 422, "sequences"),
    "unknown session": ("/sessions/nope/steps", {"steps": [[0.1, 0.0]]}, 404, "nope"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_naming_the_problem(adding: Server, case: str) -> None:
    route, body, expected, fragment = BAD_REQUESTS[case]
    raw = b'{"sequences": [[[NaN, 1.0]]]}' if body is None else None
    status, answer = adding.call("POST", route, body, raw=raw)
    assert status == expected
    assert fragment in json.dumps(answer)


def test_malformed_json_and_oversized_bodies_are_refused(adding: Server) -> None:
    assert adding.call("POST", "/predict", raw=b'{"sequences": [[[0.1,')[0] == 422
    status, answer = adding.call("POST", "/predict", {"sequences": [[[0.5, 0.5]] * 40] * 80})
    assert status == 413 and "20000" in answer["detail"]
    assert adding.call("GET", "/health")[0] == 200  # still up


def test_language_model_streams_per_step_predictions(language: Server) -> None:
    tokens = list(np.random.default_rng(3).integers(0, 10, 8))
    tokens = [int(t) for t in tokens]
    _, whole = language.call("POST", "/predict", {"sequences": [tokens]})
    _, opened = language.call("POST", "/sessions")
    pieces = []
    for start, stop in ((0, 3), (3, 8)):
        pieces += language.call("POST", f"/sessions/{opened['session_id']}/steps", {"steps": tokens[start:stop]})[1]["predictions"]
    np.testing.assert_allclose(np.asarray(pieces), np.asarray(whole["predictions"][0]), atol=1e-5)
    language.call("DELETE", f"/sessions/{opened['session_id']}")
    status, answer = language.call("POST", "/predict", {"sequences": [[10**9]]})
    assert status == 400 and "sequences[0][0]: token id 1000000000 is outside the vocabulary" in answer["detail"]


def test_sessions_are_bounded_and_expire(language: Server) -> None:
    first = language.call("POST", "/sessions")[1]["session_id"]
    assert language.call("POST", "/sessions")[0] == 201
    status, answer = language.call("POST", "/sessions")
    assert status == 429 and "2 sessions" in answer["detail"]
    time.sleep(2.5)  # the TTL is 2 s
    assert language.call("POST", f"/sessions/{first}/steps", {"steps": [1]})[0] == 404
    assert language.call("POST", "/sessions")[0] == 201


def test_a_short_load_test_has_no_server_errors(adding: Server) -> None:
    result = run_load(adding.url, clients=8, seconds=2.0, api_key=KEY)
    assert result["requests"] > 8 and result["server_errors_5xx"] == 0 and result["errors"] == 0
    assert result["p99_ms"] >= result["p50_ms"] > 0


@pytest.fixture(scope="module")
def phased(exported: Callable[[str], Path]) -> Iterator[Server]:
    path = exported("phased")  # phased_lstm on frequency
    yield from _start(path)


def test_timestamps_reach_the_phased_lstm_in_predict_and_in_streams(phased: Server) -> None:
    rng = np.random.default_rng(4)
    sequence = rng.random((6, 1)).astype(np.float32)
    times = np.sort(rng.random(6) * 20).astype(np.float32)
    status, whole = phased.call("POST", "/predict", {"sequences": [sequence.tolist()], "times": [times.tolist()]})
    assert status == 200
    session = runtime.open_session(phased.path, runtime.best_provider())
    zeros = {spec.name: np.zeros((1, 1, 6), dtype=np.float32) for spec in session.get_inputs() if spec.name.startswith("state_")}
    expected = session.run(None, {"x": sequence[None], "times": times[None], **zeros})[0]
    np.testing.assert_allclose(whole["predictions"][0], expected[0], atol=1e-6)
    _, other = phased.call("POST", "/predict", {"sequences": [sequence.tolist()], "times": [(times * 3).tolist()]})
    assert not np.allclose(other["predictions"][0], whole["predictions"][0]), "the timestamps must matter"
    _, opened = phased.call("POST", "/sessions")
    route = f"/sessions/{opened['session_id']}/steps"
    phased.call("POST", route, {"steps": sequence[:2].tolist(), "times": times[:2].tolist()})
    _, last = phased.call("POST", route, {"steps": sequence[2:].tolist(), "times": times[2:].tolist()})
    np.testing.assert_allclose(last["predictions"], whole["predictions"][0], atol=1e-6)
    # Without times, the step indices as the layer numbers them: 0, 1, ... and, in a stream, on
    # from the session's state (its state_time), so pieces still equal the whole.
    status, default = phased.call("POST", "/predict", {"sequences": [sequence.tolist()]})
    _, indices = phased.call("POST", "/predict", {"sequences": [sequence.tolist()], "times": [list(range(6))]})
    assert status == 200 and default["predictions"] == indices["predictions"]
    _, opened = phased.call("POST", "/sessions")
    route = f"/sessions/{opened['session_id']}/steps"
    phased.call("POST", route, {"steps": sequence[:2].tolist()})
    _, last = phased.call("POST", route, {"steps": sequence[2:].tolist()})
    np.testing.assert_allclose(last["predictions"], default["predictions"][0], atol=1e-6)


@pytest.mark.parametrize("provider", ["cpu", "cuda", "auto"])
def test_serve_runs_on_the_provider_asked_for_or_says_why_not(provider: str, exported: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from rnnzoo.pipeline.cli import app

    path = exported("adding")
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **options: served.append(options))  # no socket: only the choice
    result = CliRunner().invoke(app, ["serve", str(path), "--provider", provider])
    expected = {"cpu": runtime.CPU, "cuda": runtime.CUDA, "auto": runtime.best_provider()}[provider]
    output = " ".join(result.output.split())  # rich wraps long lines
    if expected == runtime.CUDA and not runtime.cuda_usable():
        assert result.exit_code == 1 and "CUDAExecutionProvider is not usable here" in output and not served
    else:
        assert result.exit_code == 0, result.output
        assert f"with {expected} on http://127.0.0.1:8000" in output
        assert served == [{"host": "127.0.0.1", "port": 8000, **uvicorn_options(idle_timeout=5.0, limit_concurrency=256)}]
