"""The HTTP app: whole-sequence prediction and streaming sessions over an exported model.

``POST /predict`` takes a batch of whole sequences (lengths may differ); ``POST /sessions``
opens a stream whose state the server keeps, ``POST /sessions/{id}/steps`` feeds it more steps,
``DELETE /sessions/{id}`` closes it. Bad requests get a 4xx naming what is wrong; a model whose
outputs depend on later steps (bidirectional) cannot stream, and its session calls get 409.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, cast

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from rnnzoo.pipeline.serve.guard import Guard, api_key_bytes
from rnnzoo.pipeline.serve.parse import show
from rnnzoo.pipeline.serve.predictor import NotStreamable, Predictor, RequestError
from rnnzoo.pipeline.serve.sessions import SessionLimit, SessionStore, Store


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field ("time") is named, not ignored
    sequences: list[Any] = Field(description="Sequences: each a list of steps (feature lists, or token ids); vectors for vector models.")
    times: list[Any] | None = Field(None, description="Per sequence, one timestamp a step (phased_lstm only).")
    return_state: StrictBool = Field(False, description="Also return each sequence's final state.")


class StepsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: list[Any] = Field(description="The new steps of the stream.")
    times: list[Any] | None = Field(None, description="One timestamp per new step (phased_lstm only).")


def create_app(predictor: Predictor, api_key: str | None = None, max_sessions: int = 1000, session_ttl: float = 600.0,
               max_batch: int = 256, max_body_bytes: int = 2_000_000, body_timeout: float = 10.0, store: Store | None = None) -> FastAPI:
    """The app; raises ValueError naming a setting that cannot work (an empty or non-ASCII key, a limit <= 0).

    ``store`` keeps the sessions: by default in this process (``max_sessions`` and ``session_ttl``
    bound it); a store shared by several worker processes (see workers.py) comes with its own bounds.
    """
    key = api_key_bytes(api_key)
    for name, value in (("--max-body-bytes", max_body_bytes), ("--body-timeout", body_timeout)):
        if not value > 0:
            raise ValueError(f"{name} is {value}: it must be more than 0")
    app = FastAPI(title="rnnzoo serve", description=f"{predictor.metadata.get('cell')} on {predictor.metadata.get('task')}")
    app.add_middleware(Guard, api_key=key, max_body_bytes=max_body_bytes, body_timeout=body_timeout)
    store = store if store is not None else SessionStore(max_sessions, session_ttl)

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        # pydantic's own list would quote each bad input whole, however long it is.
        problems = [
            f"the body is not valid JSON (at character {e['loc'][-1]}: {e.get('ctx', {}).get('error', e['msg'])})"
            if e["type"] == "json_invalid" else f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {show(e.get('input'))})"
            for e in error.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(NotStreamable)
    async def cannot_stream(request: Request, error: NotStreamable) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(SessionLimit)
    async def too_many(request: Request, error: SessionLimit) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=429)

    @app.get("/health")
    def health() -> dict[str, Any]:
        # With workers sharing the sessions, which process answered (the count is every worker's).
        worker = {"worker": os.getpid()} if store.shared else {}
        return {"status": "ok", "sessions": len(store), "streaming": predictor.streams, **worker}

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
            predictor.check_sequence(seq, None, f"sequences[{i}]", "times") if body.times is None
            else predictor.check_sequence(seq, body.times[i], f"sequences[{i}]", f"times[{i}]")
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
            times = np.stack([cast(np.ndarray, checked[i][1]) for i in members]) if predictor.takes_time and body.times is not None else None
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
            raise NotStreamable(predictor.stream_refusal)
        return {"session_id": store.create(predictor.zero_state(1)), "expires_after_idle_s": session_ttl}

    @app.post("/sessions/{session_id}/steps")
    def feed(session_id: str, body: StepsRequest) -> Any:
        if not predictor.streams:  # no session can exist; say why rather than "unknown session"
            raise NotStreamable(predictor.stream_refusal)
        session = store.get(session_id)
        if session is None:
            detail = f"unknown session {show(session_id)} (never opened, deleted or expired)"
            return JSONResponse({"detail": detail}, status_code=404)
        array, times = predictor.check_sequence(body.steps, body.times, "steps")
        done = store.advance(session_id, session, array.shape[0],
                             lambda state: predictor.run(array[None], None if times is None else times[None], state))
        if done is None:  # deleted or expired by another worker since it was looked up
            return JSONResponse({"detail": f"unknown session {show(session_id)} (deleted or expired meanwhile)"}, status_code=404)
        output, steps_seen = done
        return {"predictions": output[0].tolist(), "steps_seen": steps_seen}

    @app.delete("/sessions/{session_id}", status_code=204)
    def close(session_id: str) -> Response:
        if not store.delete(session_id):
            return JSONResponse({"detail": f"unknown session {show(session_id)}"}, status_code=404)
        return Response(status_code=204)

    return app
