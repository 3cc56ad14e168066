"""Value checks: one vocabulary for every option rnnzoo reads (a cell's, a params file's, a task's).

Every refusal of a value reads the same way,

    <name> must be <what is allowed>, got <value>

and of a name that is not an option,

    unknown <option or key> <name> (did you mean <closest>?); allowed [for <owner>]: <names>

with the name as the user wrote it (``ratio_on``; ``params: experiments.adding-janet.train.lr``;
``adding option 'length'``), what is allowed in words, and the value received (its ``repr``, cut to
one line). The error is an ``InvalidValue`` (a ``ValueError``) carrying ``name``, ``value`` and
``allowed``, so a caller that knows where the value came from can say so without parsing the text
(the params file names the key path of a cell's option). Layers with errors of their own pass
a subclass of ``InvalidValue`` and theirs (``pipeline.config.InvalidParam``,
``pipeline.tasks.base.InvalidTaskOption``) as ``error``.

Torch-free: the cells library, the params file and the tasks all import it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

# A value's repr past this many characters is cut, so that a message stays one readable line.
SHOWN_CHARACTERS = 60


def cut(text: str) -> str:
    """``text`` cut to SHOWN_CHARACTERS (``xxx...``)."""
    return text if len(text) <= SHOWN_CHARACTERS else f"{text[: SHOWN_CHARACTERS - 3]}..."


def show(value: Any) -> str:
    """``repr(value)``, cut to SHOWN_CHARACTERS."""
    return cut(repr(value))


class InvalidValue(ValueError):
    """``name`` must be ``allowed``, got ``value``: a value outside what is allowed. ``key`` is the
    option's own name where ``name`` says more (``key`` "length" of ``name`` "adding option 'length'")."""

    def __init__(self, name: str, value: Any, allowed: str, key: str | None = None) -> None:
        self.name, self.value, self.allowed, self.key = name, value, allowed, key or name
        super().__init__(f"{name} must be {allowed}, got {show(value)}")


def refuse(name: str, value: Any, allowed: str, error: type[InvalidValue] = InvalidValue) -> NoReturn:
    """Raise ``error(name, value, allowed)``."""
    raise error(name, value, allowed)


def require(condition: bool, name: str, value: Any, allowed: str, error: type[InvalidValue] = InvalidValue) -> None:
    """Raise ``error(name, value, allowed)`` unless ``condition`` holds."""
    if not condition:
        refuse(name, value, allowed, error)


def is_int(value: Any) -> bool:
    """An int, not a bool (True would pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_positive_int(name: str, value: Any, error: type[InvalidValue] = InvalidValue) -> int:
    """Return ``value`` if it is an int >= 1."""
    require(is_int(value) and value >= 1, name, value, "a positive integer", error)
    return int(value)


def require_in_range(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False, error: type[InvalidValue] = InvalidValue
) -> float:
    """Return ``value`` as a float if ``low <= value <= high`` (``low < value`` if low_open)."""
    bracket = "(" if low_open else "["
    if math.isinf(low) and math.isinf(high):
        allowed = "a number"
    elif math.isinf(high):
        allowed = f"a number {'>' if low_open else '>='} {low}"
    else:
        allowed = f"a number in {bracket}{low}, {high}]"
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)  # ±inf: by the bounds
    require(number and (low < value <= high if low_open else low <= value <= high), name, value, allowed, error)
    return float(value)


def require_bool(name: str, value: Any, error: type[InvalidValue] = InvalidValue) -> bool:
    """Return ``value`` if it is a bool (a string such as "false" would silently read as True)."""
    require(isinstance(value, bool), name, value, "true or false", error)
    return bool(value)


def require_rate(name: str, value: Any, error: type[InvalidValue] = InvalidValue) -> float:
    """Return a dropout rate in [0, 1) as a float (a rate of 1 would drop everything)."""
    require(is_number(value) and 0.0 <= value < 1.0, name, value, "a number in [0, 1) (a rate of 1 drops everything)", error)
    return float(value)


def one_of(allowed: Iterable[Any]) -> str:
    """``one of 'a', 'b'``: what is allowed, as every choice's refusal words it."""
    return f"one of {', '.join(map(repr, allowed))}"


def require_choice(name: str, value: Any, allowed: tuple[str, ...], error: type[InvalidValue] = InvalidValue) -> str:
    """Return ``value`` if it is one of ``allowed``."""
    require(value in allowed, name, value, one_of(allowed), error)
    return str(value)


def refuse_unknown(
    given: Iterable[Any],
    allowed: Sequence[str],
    what: str = "option",
    whose: str = "",
    prefix: str = "",
    error: Callable[[str], Exception] = ValueError,
) -> None:
    """Raise ``error(message)`` if ``given`` holds names not in ``allowed``, suggesting for each the
    closest allowed name (a typo's fix): ``unknown option depht (did you mean depth?); allowed for
    cell 'rhn': depth, ...``. ``what`` is "option" or "key"; ``prefix`` goes before each name (a key
    path such as ``train.``); ``whose`` follows "allowed" (``for cell 'rhn'``, ``sections``)."""
    unknown = [str(name) for name in given if name not in allowed]
    if not unknown:
        return
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name, allowed, n=1)
        named.append(f"{prefix}{cut(name)}" + (f" (did you mean {close[0]}?)" if close else ""))
    after = f" {whose}" if whose else ""
    raise error(f"unknown {what} {', '.join(named)}; allowed{after}: {', '.join(allowed) or 'none'}")
