"""Only a model whose outputs never depend on later steps may stream; the others say why and keep /predict."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI

from rnnzoo.pipeline.serve.predictor import Predictor
from tests.pipeline.serve.asgi import call

READS_AHEAD = "depend on later steps"
# model -> what its refusal must say (every one also points to /predict)
CANNOT_STREAM = {
    "bidirectional janet (ONNX Scan)": [READS_AHEAD, "bidirectional"],
    "bidirectional lstm (ONNX LSTM)": [READS_AHEAD, "bidirectional"],
    "marked bidirectional in metadata": ["this model is bidirectional", READS_AHEAD],
    "vector": ["no time axis"],
}
STREAMING_CALLS = {"open a session": ("/sessions", None), "feed steps": ("/sessions/0123abcd/steps", {"steps": [[0.5, 1.0]]})}


@pytest.mark.parametrize("call_name", sorted(STREAMING_CALLS))
@pytest.mark.parametrize("model", sorted(CANNOT_STREAM))
def test_streaming_calls_to_a_model_that_cannot_stream_get_409_saying_why(app_for: Callable[..., FastAPI], model: str, call_name: str) -> None:
    route, body = STREAMING_CALLS[call_name]
    reply = call(app_for(model), "POST", route, body)
    assert reply.status == 409
    for fragment in [*CANNOT_STREAM[model], "/predict"]:
        assert fragment in reply.detail


@pytest.mark.parametrize("model", ["bidirectional janet (ONNX Scan)", "bidirectional lstm (ONNX LSTM)"])
def test_predict_still_serves_a_bidirectional_model_whose_pieces_would_disagree(exported: Callable[[str], Path], app_for: Callable[..., FastAPI],
                                                                                model: str) -> None:
    sequence = np.random.default_rng(5).random((6, 2)).astype(np.float32)
    reply = call(app_for(model), "POST", "/predict", {"sequences": [sequence.tolist()]})
    assert reply.status == 200
    predictor = Predictor(exported(model))
    whole, _ = predictor.run(sequence[None], None, None)
    np.testing.assert_allclose(reply.json()["predictions"][0], whole[0], atol=1e-6)
    _, state = predictor.run(sequence[None, :3], None, None)  # what a stream fed 3 + 3 steps would answer
    pieces, _ = predictor.run(sequence[None, 3:], None, state)
    assert np.abs(pieces - whole).max() > 1e-3, "the refusal is needed: pieces and whole differ"


STREAMS = {
    "adding": True, "language": True, "phased": True,
    "bidirectional janet (ONNX Scan)": False, "bidirectional lstm (ONNX LSTM)": False, "marked bidirectional in metadata": False, "vector": False,
}


@pytest.mark.parametrize("model", sorted(STREAMS))
def test_health_and_metadata_say_whether_sessions_can_stream(app_for: Callable[..., FastAPI], model: str) -> None:
    app = app_for(model)
    health, metadata = call(app, "GET", "/health").json(), call(app, "GET", "/metadata").json()
    assert health["streaming"] is STREAMS[model] and metadata["streaming"] is STREAMS[model]
    reason = metadata["streaming_refused_because"]
    assert reason is None if STREAMS[model] else "/predict" in reason


def test_a_unidirectional_model_still_streams_what_predict_answers(app_for: Callable[..., FastAPI]) -> None:
    app = app_for("adding")
    sequence = np.random.default_rng(6).random((6, 2)).tolist()
    whole = call(app, "POST", "/predict", {"sequences": [sequence]}).json()["predictions"][0]
    opened = call(app, "POST", "/sessions")
    assert opened.status == 201
    route = f"/sessions/{opened.json()['session_id']}/steps"
    assert call(app, "POST", route, {"steps": sequence[:3]}).status == 200
    np.testing.assert_allclose(call(app, "POST", route, {"steps": sequence[3:]}).json()["predictions"], whole, atol=1e-6)
