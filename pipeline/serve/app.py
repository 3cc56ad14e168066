"""The HTTP app: whole-sequence prediction and streaming sessions over an exported model.

``POST /predict`` takes a batch of whole sequences (lengths may differ); ``POST /sessions``
opens a stream whose state the server keeps, ``POST /sessions/{id}/steps`` feeds it more steps,
``DELETE /sessions/{id}`` closes it. Bad requests get a 4xx naming what is wrong.
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from pipeline.serve.predictor import Predictor, RequestError
from pipeline.serve.sessions import SessionLimit, SessionStore


class PredictRequest(BaseModel):
    sequences: list[Any] = Field(description="Sequences: each a list of steps (feature lists, or token ids); vectors for vector models.")
    times: list[Any] | None = Field(None, description="Per sequence, one timestamp a step (phased_lstm only).")
    return_state: bool = Field(False, description="Also return each sequence's final state.")


class StepsRequest(BaseModel):
    steps: list[Any] = Field(description="The new steps of the stream.")
    times: list[Any] | None = Field(None, description="One timestamp per new step (phased_lstm only).")


def create_app(predictor: Predictor, api_key: str | None = None, max_sessions: int = 1000, session_ttl: float = 600.0,
               max_batch: int = 256, max_body_bytes: int = 2_000_000) -> FastAPI:
    app = FastAPI(title="rnnzoo serve", description=f"{predictor.metadata.get('cell')} on {predictor.metadata.get('task')}")
    store = SessionStore(max_sessions, session_ttl)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if api_key is not None and not hmac.compare_digest(request.headers.get("x-api-key", ""), api_key):
            return JSONResponse({"detail": "missing or wrong X-API-Key header"}, status_code=401)
        if request.method in ("POST", "PUT"):
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse({"detail": "send a Content-Length header"}, status_code=411)
            if not length.isdigit():
                return JSONResponse({"detail": f"Content-Length {length!r} is not a byte count"}, status_code=400)
            if int(length) > max_body_bytes:
                return JSONResponse({"detail": f"body of {length} bytes is over the limit of {max_body_bytes}"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(SessionLimit)
    async def too_many(request: Request, error: SessionLimit) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=429)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "sessions": len(store)}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return predictor.describe()

    @app.post("/predict")
    def predict(body: PredictRequest) -> dict[str, Any]:
        if not body.sequences:
            raise RequestError("sequences is empty; send at least one")
        if len(body.sequences) > max_batch:
            raise RequestError(f"{len(body.sequences)} sequences is over the batch limit of {max_batch}")
        if body.times is not None and len(body.times) != len(body.sequences):
            raise RequestError(f"times has {len(body.times)} entries for {len(body.sequences)} sequences")
        checked = [
            predictor.check_sequence(seq, None if body.times is None else body.times[i], f"sequences[{i}]")
            for i, seq in enumerate(body.sequences)
        ]
        # One run per distinct length: the graph takes a rectangular batch.
        groups: dict[int, list[int]] = defaultdict(list)
        for index, (array, _) in enumerate(checked):
            groups[array.shape[0]].append(index)
        predictions: list[Any] = [None] * len(checked)
        states: list[Any] = [None] * len(checked)
        for members in groups.values():
            xs = np.stack([checked[i][0] for i in members])
            times = np.stack([checked[i][1] for i in members]) if predictor.takes_time else None
            output, final = predictor.run(xs, times, None)
            for row, index in enumerate(members):
                predictions[index] = output[row].tolist()
                states[index] = {name: field[:, row].tolist() for name, field in zip(predictor.state_names, final)}
        answer: dict[str, Any] = {"predictions": predictions}
        if body.return_state:
            answer["states"] = states
        return answer

    @app.post("/sessions", status_code=201)
    def open_session() -> dict[str, Any]:
        if not predictor.streams:
            raise RequestError("this model has no time axis: streaming sessions need a sequence model")
        return {"session_id": store.create(predictor.zero_state(1)), "expires_after_idle_s": session_ttl}

    @app.post("/sessions/{session_id}/steps")
    def feed(session_id: str, body: StepsRequest) -> Any:
        session = store.get(session_id)
        if session is None:
            return JSONResponse({"detail": f"unknown session {session_id!r} (never opened, deleted, or expired)"}, status_code=404)
        array, times = predictor.check_sequence(body.steps, body.times, "steps")
        with session.lock:
            output, session.state = predictor.run(array[None], None if times is None else times[None], session.state)
            session.steps_seen += array.shape[0]
            return {"predictions": output[0].tolist(), "steps_seen": session.steps_seen}

    @app.delete("/sessions/{session_id}", status_code=204)
    def close(session_id: str) -> Response:
        if not store.delete(session_id):
            return JSONResponse({"detail": f"unknown session {session_id!r}"}, status_code=404)
        return Response(status_code=204)

    return app
