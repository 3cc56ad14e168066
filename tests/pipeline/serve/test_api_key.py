"""The API key: any wrong header is a 401 (never a 500), and a key that cannot work is refused before serving."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi import FastAPI

from tests.pipeline.serve.asgi import call

KEY = "s3cret-key"
WRONG_HEADERS: dict[str, bytes | None] = {
    "missing": None,
    "empty": b"",
    "another key": b"0ther-key",
    "the key plus a character": KEY.encode() + b"x",
    "a non-ASCII byte (latin-1)": b"s3cr\xe9t-key",
    "non-ASCII characters (UTF-8)": "s3crét-key".encode(),
    "bytes that are no text": b"\xff\xfe\x00",
}


@pytest.mark.parametrize("case", sorted(WRONG_HEADERS))
@pytest.mark.parametrize("route", ["/health", "/predict"])
def test_a_wrong_x_api_key_header_gets_401(app_for: Callable[..., FastAPI], case: str, route: str) -> None:
    reply = call(app_for("adding", api_key=KEY), "GET" if route == "/health" else "POST", route, {"sequences": [[[0.1, 1.0]]]},
                 key=WRONG_HEADERS[case])
    assert reply.status == 401 and reply.detail == "missing or wrong X-API-Key header"


def test_the_right_key_is_let_in(app_for: Callable[..., FastAPI]) -> None:
    assert call(app_for("adding", api_key=KEY), "GET", "/health", key=KEY).status == 200


# key -> what the refusal says
UNWORKABLE_KEYS = {
    "": "--api-key is empty: that would serve without authentication",
    "   ": "--api-key is empty",
    "s3crét": "--api-key has a non-ASCII or control character at position 4",
    "s3cret\n": "--api-key has a non-ASCII or control character at position 6",
    " s3cret": "--api-key starts or ends with a space",
}


@pytest.mark.parametrize("key", sorted(UNWORKABLE_KEYS))
def test_a_key_that_cannot_work_is_refused_when_the_app_is_made(app_for: Callable[..., FastAPI], key: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(UNWORKABLE_KEYS[key])) as raised:
        app_for("adding", api_key=key)
    assert key.strip() == "" or key.strip() not in str(raised.value)  # the secret is not echoed
