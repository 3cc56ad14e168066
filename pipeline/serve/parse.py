"""JSON request values -> validated arrays; every refusal names the field, the value and what is allowed.

JSON decoding keeps what numpy would quietly coerce: ``"0.5"`` and ``true`` would become
floats, ``1.7`` the token id ``1``, ``null`` a NaN, and ``10**400`` an overflow. So the values
are checked as JSON gave them, before any array is made. Token ids may be written ``2.0``
(clients that only have floats send that): an integral float is taken as its integer.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


class RequestError(ValueError):
    """A request the model cannot take; the message says what is wrong."""


FLOAT32_MAX = float(np.finfo(np.float32).max)
FINITE = f"a finite number within float32's range (|x| <= {FLOAT32_MAX:.3g})"
SHOWN = 40  # characters of a bad value quoted back


def show(value: Any) -> str:
    """The value as JSON, cut short: a 401-digit number or a long list must not fill the reply."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text)} characters)"


# What a JSON value that is no number is, in the words of JSON.
KINDS = {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}


def _not_a_number(value: Any, where: str, expected: str) -> RequestError:
    if value is None:
        return RequestError(f"{where} is null (missing); expected {expected}")
    return RequestError(f"{where}: {show(value)} is {KINDS.get(type(value), 'not a number')}; expected {expected}")


def number(value: Any, where: str) -> float:
    """One feature or timestamp: an int or float, finite and within float32 (the graph's type)."""
    if type(value) not in (int, float):  # bool is a subclass of int: refused here by the exact type
        raise _not_a_number(value, where, "a finite number")
    # False for NaN and infinity too, and exact for an int of any size (math.isfinite(10**400) would overflow).
    if not abs(value) <= FLOAT32_MAX:
        raise RequestError(f"{where}: {show(value)} is not allowed; expected {FINITE}")
    return float(value)


def token_id(value: Any, where: str, vocabulary: int) -> int:
    """One token id: an integer (an integral float such as ``2.0`` counts) in ``[0, vocabulary)``."""
    allowed = f"an integer token id in [0, {vocabulary - 1}] (vocabulary of {vocabulary})"
    if type(value) not in (int, float):
        raise _not_a_number(value, where, allowed)
    if isinstance(value, float):
        if not value.is_integer():  # 1.7, NaN, infinity
            raise RequestError(f"{where}: {show(value)} is not an integer; expected {allowed}")
        value = int(value)
    if not 0 <= value < vocabulary:
        raise RequestError(f"{where}: token id {show(value)} is outside the vocabulary; expected {allowed}")
    return value


def _steps(values: Any, where: str, max_length: int) -> list[Any]:
    if not isinstance(values, list):
        raise RequestError(f"{where}: expected a list of steps, got {show(values)}")
    if not values:
        raise RequestError(f"{where}: empty sequence; send at least one step")
    if len(values) > max_length:
        raise RequestError(f"{where}: {len(values)} steps is over the maximum of {max_length}")
    return values


def _numbers(values: list[Any], where: str) -> list[float]:
    return [number(value, f"{where}[{i}]") for i, value in enumerate(values)]


def _fast_floats(rows: list[list[Any]]) -> np.ndarray | None:
    """The float32 array when every value is a plain finite number in range; ``None`` sends the caller
    to the slow path that names the first bad value (the common, valid request stays vectorised)."""
    if not all(type(v) in (int, float) for row in rows for v in row):
        return None
    try:
        array = np.array(rows, dtype=np.float64)
    except OverflowError:  # an int past float64
        return None
    if not (np.isfinite(array) & (np.abs(array) <= FLOAT32_MAX)).all():
        return None
    return array.astype(np.float32)


def vectors(values: Any, features: int, where: str, max_length: int) -> np.ndarray:
    """A sequence of feature vectors ``(steps, features)``."""
    steps = _steps(values, where, max_length)
    for t, step in enumerate(steps):
        if not isinstance(step, list) or len(step) != features:
            got = f"a list of {len(step)}" if isinstance(step, list) else show(step)
            raise RequestError(f"{where}[{t}]: expected a step of {features} numbers (shape (steps, {features})), got {got}")
    array = _fast_floats(steps)
    if array is None:  # a bad value somewhere: find and name the first
        array = np.array([_numbers(step, f"{where}[{t}]") for t, step in enumerate(steps)], dtype=np.float32)
    return array


def vector(values: Any, features: int, where: str) -> np.ndarray:
    """One input vector ``(features,)`` of a model with no time axis."""
    if not isinstance(values, list) or len(values) != features:
        got = f"a list of {len(values)}" if isinstance(values, list) else show(values)
        raise RequestError(f"{where}: expected a vector of {features} numbers (shape ({features},)), got {got}")
    return _flat(values, where)


def token_ids(values: Any, vocabulary: int, where: str, max_length: int) -> np.ndarray:
    """A sequence of token ids ``(steps,)``."""
    steps = _steps(values, where, max_length)
    return np.array([token_id(v, f"{where}[{t}]", vocabulary) for t, v in enumerate(steps)], dtype=np.int64)


def timestamps(values: Any, steps: int, where: str) -> np.ndarray:
    """One timestamp a step ``(steps,)``."""
    if not isinstance(values, list) or len(values) != steps:
        got = f"{len(values)}" if isinstance(values, list) else show(values)
        raise RequestError(f"{where}: expected {steps} timestamps (one a step), got {got}")
    return _flat(values, where)


def _flat(values: list[Any], where: str) -> np.ndarray:
    """A checked-length list of numbers as float32 ``(len,)``; a bad value is named by ``where[i]``."""
    array = _fast_floats([values])
    return array[0] if array is not None else np.array(_numbers(values, where), dtype=np.float32)
