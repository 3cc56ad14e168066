"""Every number a request carries is checked as JSON gave it: a bad one gets a 400 naming its field, the value and what is allowed.

The places are every numeric field of /predict and of /sessions/{id}/steps: features, timestamps,
token ids and vectors. Nothing is coerced: ``"0.5"``, ``true`` and ``1.7`` (as a token id) are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI

from tests.pipeline.serve.asgi import call

BIG = 10**400  # a JSON integer past float64: 401 digits
# place -> (model, route, body with the value V at the field named, that field)
V = object()
FLOAT_PLACES: dict[str, tuple[str, str, Any, str]] = {
    "predict: a feature": ("adding", "/predict", {"sequences": [[[0.5, 1.0]], [[0.5, 1.0], [V, 1.0]]]}, "sequences[1][1][0]"),
    "steps: a feature": ("adding", "/steps", {"steps": [[0.5, 1.0], [0.5, V]]}, "steps[1][1]"),
    "predict: a timestamp": ("phased", "/predict", {"sequences": [[[0.5], [0.5]]], "times": [[0.0, V]]}, "times[0][1]"),
    "steps: a timestamp": ("phased", "/steps", {"steps": [[0.5], [0.5]], "times": [V, 1.0]}, "times[0]"),
    "predict: a vector's element": ("vector", "/predict", {"sequences": [[0.5] * 63 + [V]]}, "sequences[0][63]"),
}
FINITE = "expected a finite number"
# value -> what the reply quotes of it, and what it says
BAD_FLOATS: dict[str, tuple[Any, list[str]]] = {
    "10**400": (BIG, ["1000000000000000000000000000000000000000... (401 characters) is not allowed", FINITE, "float32"]),
    "1e39 (past float32)": (1e39, ["1e+39 is not allowed", FINITE, "float32"]),
    "NaN": (float("nan"), ["NaN is not allowed", FINITE]),
    "-Infinity": (float("-inf"), ["-Infinity is not allowed", FINITE]),
    "a quoted number": ("0.5", ['"0.5" is a string', FINITE]),
    "true": (True, ["true is a boolean", FINITE]),
    "null": (None, ["is null (missing)", FINITE]),
    "a list": ([0.5], ["[0.5] is a list", FINITE]),
}


def _put(body: Any, value: Any) -> Any:
    """``body`` with the placeholder V replaced by ``value``."""
    if body is V:
        return value
    if isinstance(body, dict):
        return {key: _put(item, value) for key, item in body.items()}
    if isinstance(body, list):
        return [_put(item, value) for item in body]
    return body


def _send(app: FastAPI, route: str, body: Any) -> Any:
    if route == "/steps":  # into a fresh stream
        route = f"/sessions/{call(app, 'POST', '/sessions').json()['session_id']}/steps"
    return call(app, "POST", route, body)


@pytest.mark.parametrize("value", sorted(BAD_FLOATS))
@pytest.mark.parametrize("place", sorted(FLOAT_PLACES))
def test_a_bad_number_gets_400_naming_field_value_and_what_is_allowed(app_for: Callable[..., FastAPI], place: str, value: str) -> None:
    model, route, body, field = FLOAT_PLACES[place]
    bad, fragments = BAD_FLOATS[value]
    reply = _send(app_for(model), route, _put(body, bad))
    assert reply.status == 400
    assert reply.detail.startswith(field + (" " if bad is None else ": "))
    for fragment in fragments:
        assert fragment in reply.detail


TOKEN_PLACES = {
    "predict": ("/predict", {"sequences": [[1, 2], [1, V]]}, "sequences[1][1]"),
    "steps": ("/steps", {"steps": [1, V]}, "steps[1]"),
}
VOCABULARY_FRAGMENT = "expected an integer token id in [0, "
# value -> what the reply says of it
BAD_IDS: dict[str, tuple[Any, str]] = {
    "1.7": (1.7, "1.7 is not an integer"),
    "NaN": (float("nan"), "NaN is not an integer"),
    "-1": (-1, "token id -1 is outside the vocabulary"),
    "the vocabulary size": ("V", "is outside the vocabulary"),
    "10**400": (BIG, "token id 1000000000000000000000000000000000000000... (401 characters) is outside"),
    "a quoted id": ("3", '"3" is a string'),
    "true": (True, "true is a boolean"),
    "null": (None, "is null (missing)"),
}


@pytest.mark.parametrize("value", sorted(BAD_IDS))
@pytest.mark.parametrize("place", sorted(TOKEN_PLACES))
def test_a_bad_token_id_gets_400_naming_it_and_the_vocabulary(app_for: Callable[..., FastAPI], place: str, value: str) -> None:
    app = app_for("language")
    vocabulary = call(app, "GET", "/metadata").json()["vocabulary"]
    route, body, field = TOKEN_PLACES[place]
    bad, fragment = BAD_IDS[value]
    reply = _send(app, route, _put(body, vocabulary if bad == "V" else bad))
    assert reply.status == 400 and reply.detail.startswith(field)
    assert fragment in reply.detail and f"{VOCABULARY_FRAGMENT}{vocabulary - 1}] (vocabulary of {vocabulary})" in reply.detail


@pytest.mark.parametrize("route", ["/predict", "/steps"])
def test_an_integral_float_token_id_is_taken_as_its_integer(app_for: Callable[..., FastAPI], route: str) -> None:
    app = app_for("language")
    field = "sequences" if route == "/predict" else "steps"
    ids = [3, 1, 2]
    as_ints = _send(app, route, {field: [ids] if route == "/predict" else ids})
    as_floats = _send(app, route, {field: [[float(i) for i in ids]] if route == "/predict" else [float(i) for i in ids]})
    assert as_ints.status == as_floats.status == 200
    np.testing.assert_array_equal(as_ints.json()["predictions"], as_floats.json()["predictions"])


# body -> the field a 422 names: no field is silently coerced or ignored
UNCOERCED = {
    "return_state as a string": ({"sequences": [[[0.5, 1.0]]], "return_state": "yes"}, 'body.return_state: Input should be a valid boolean (got "yes")'),
    "a misspelt field": ({"sequences": [[[0.5, 1.0]]], "time": [[0.0]]}, "body.time: Extra inputs are not permitted"),
    "sequences not a list": ({"sequences": "0.5"}, "body.sequences: Input should be a valid list"),
}


@pytest.mark.parametrize("case", sorted(UNCOERCED))
def test_a_field_of_the_wrong_kind_or_name_gets_422_naming_it(app_for: Callable[..., FastAPI], case: str) -> None:
    body, fragment = UNCOERCED[case]
    reply = call(app_for("adding"), "POST", "/predict", body)
    assert reply.status == 422 and fragment in reply.detail


def test_a_long_bad_value_is_cut_short_in_the_reply(app_for: Callable[..., FastAPI]) -> None:
    reply = call(app_for("adding"), "POST", "/predict", {"sequences": ["x" * 100_000]})
    assert reply.status == 400 and len(reply.detail) < 300 and "(100002 characters)" in reply.detail
