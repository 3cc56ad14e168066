"""The body limit counts the bytes that arrive, whatever the headers claim, and a body has a deadline."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
from fastapi import FastAPI

from tests.pipeline.serve.asgi import call

LIMIT = 20_000
CHUNK = 1_000


def _body(sequences: int) -> bytes:
    """A valid /predict body; 200 sequences of 40 steps is about 160 kB, far over LIMIT."""
    steps = np.random.default_rng(7).random((40, 2)).round(6).tolist()
    return json.dumps({"sequences": [steps] * sequences}).encode()


def _chunks(body: bytes) -> list[bytes]:
    return [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)]


CHUNKED = (b"transfer-encoding", b"chunked")
# name -> (headers, body chunks the app may read before refusing)
OVERSIZED = {
    "chunked, no Content-Length": ([CHUNKED], LIMIT // CHUNK + 1),
    "Content-Length understates the body": ([(b"content-length", b"10")], LIMIT // CHUNK + 1),
    "Content-Length 10 and chunked": ([(b"content-length", b"10"), CHUNKED], LIMIT // CHUNK + 1),
    "Content-Length states the size": ([(b"content-length", str(len(_body(200))).encode())], 0),  # refused unread
}


@pytest.mark.parametrize("case", sorted(OVERSIZED))
def test_a_body_over_the_limit_gets_413_as_soon_as_the_limit_is_passed(app_for: Callable[..., FastAPI], case: str) -> None:
    headers, readable = OVERSIZED[case]
    reply = call(app_for("adding", max_body_bytes=LIMIT), "POST", "/predict", chunks=_chunks(_body(200)), headers=headers)
    assert reply.status == 413 and f"limit of {LIMIT} bytes" in reply.detail
    assert reply.chunks_read == readable  # stopped reading at the first chunk past the limit
    assert reply.headers["connection"] == "close"


@pytest.mark.parametrize("route", ["/predict", "/sessions/any/steps", "/sessions"])
def test_every_route_counts_the_bytes_of_a_chunked_body(app_for: Callable[..., FastAPI], route: str) -> None:
    reply = call(app_for("adding", max_body_bytes=LIMIT), "POST", route, chunks=_chunks(_body(200)), headers=[CHUNKED])
    assert reply.status == 413


def test_a_chunked_body_within_the_limit_is_served_like_any_other(app_for: Callable[..., FastAPI]) -> None:
    app = app_for("adding", max_body_bytes=LIMIT)
    body = _body(2)
    assert len(body) < LIMIT
    chunked = call(app, "POST", "/predict", chunks=_chunks(body), headers=[CHUNKED])
    whole = call(app, "POST", "/predict", raw=body)
    assert chunked.status == 200 and chunked.json() == whole.json()


# name -> (headers, the part of the body that arrives before the client stalls)
STALLED = {
    "nothing arrives": ([(b"content-length", b"100")], []),
    "half a declared body": ([(b"content-length", b"100")], [b'{"sequences": [[[0.1, 0.2]]']),
    "a chunked body never ended": ([CHUNKED], [b'{"sequences": [[[0.1, 0.2]]]}']),
}


@pytest.mark.parametrize("case", sorted(STALLED))
def test_a_body_that_stalls_gets_408_at_the_deadline(app_for: Callable[..., FastAPI], case: str) -> None:
    headers, chunks = STALLED[case]
    reply = call(app_for("adding", body_timeout=0.3), "POST", "/predict", chunks=chunks, headers=headers, stall=True)
    assert reply.status == 408 and "within 0.3 s" in reply.detail
    assert 0.3 <= reply.seconds < 2.0
    assert reply.headers["connection"] == "close"


@pytest.mark.parametrize("length", [b"ten", b"-5", b"1e3"])
def test_a_content_length_that_is_no_byte_count_gets_400_naming_it(app_for: Callable[..., FastAPI], length: bytes) -> None:
    reply = call(app_for("adding"), "POST", "/predict", chunks=[b"{}"], headers=[(b"content-length", length)])
    assert reply.status == 400 and f'Content-Length "{length.decode()}" is not a byte count' in reply.detail


@pytest.mark.parametrize("setting", ["max_body_bytes", "body_timeout"])
def test_limits_that_cannot_work_are_refused_when_the_app_is_made(app_for: Callable[..., FastAPI], setting: str) -> None:
    with pytest.raises(ValueError, match=f"--{setting.replace('_', '-')} is 0: it must be more than 0"):
        app_for("adding", **{setting: 0})
