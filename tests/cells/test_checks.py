"""cells.checks: the one vocabulary of value checks (each helper's verdicts and its message)."""

from __future__ import annotations

import math

import pytest

from rnnzoo.cells import checks
from rnnzoo.cells.checks import InvalidValue


class Custom(InvalidValue):
    """A layer's own error, as pipeline.config.InvalidParam is."""


@pytest.mark.parametrize(
    ("check", "good", "bad", "allowed"),
    [
        (lambda v, e: checks.require_positive_int("n", v, e), [1, 7], [0, -1, 1.0, True, "3", None], "a positive integer"),
        (lambda v, e: checks.require_in_range("x", v, 0.0, 1.0, error=e), [0, 0.5, 1], [-0.1, 1.01, math.nan, "0.5", False], "a number in [0.0, 1.0]"),
        (lambda v, e: checks.require_in_range("x", v, 0.0, math.inf, low_open=True, error=e), [1e-9, math.inf], [0, -1, math.nan], "a number > 0.0"),
        (lambda v, e: checks.require_bool("b", v, e), [True, False], [0, 1, "false", None], "true or false"),
        (lambda v, e: checks.require_rate("p", v, e), [0, 0.0, 0.99], [1, 1.0, -0.1, math.inf, "0.1", True], "a number in [0, 1) (a rate of 1 drops everything)"),
        (lambda v, e: checks.require_choice("c", v, ("a", "b"), e), ["a", "b"], ["c", None, ["a"]], "one of 'a', 'b'"),
    ],
    ids=["positive_int", "in_range", "in_range_open_infinite", "bool", "rate", "choice"],
)
def test_each_check_passes_the_allowed_and_refuses_the_rest_in_one_form(check, good, bad, allowed) -> None:
    for value in good:
        assert check(value, InvalidValue) == value
    for value in bad:
        with pytest.raises(Custom) as caught:
            check(value, Custom)
        error = caught.value
        assert error.allowed == allowed and error.value is value
        assert str(error) == f"{error.name} must be {allowed}, got {value!r}"


def test_a_long_value_is_cut_to_one_line() -> None:
    error = InvalidValue("x", "y" * 500, "short")
    assert str(error).endswith("...") and len(str(error)) < 100


@pytest.mark.parametrize(
    ("given", "allowed", "message"),
    [
        (["depht"], ["depth", "dropout"], "unknown option depht (did you mean depth?); allowed for cell 'rhn': depth, dropout"),
        (["colour"], ["depth"], "unknown option colour; allowed for cell 'rhn': depth"),
        (["x"], [], "unknown option x; allowed for cell 'rhn': none"),
    ],
)
def test_unknown_names_are_refused_with_the_closest_allowed(given, allowed, message) -> None:
    with pytest.raises(ValueError) as caught:
        checks.refuse_unknown(given, allowed, whose="for cell 'rhn'")
    assert str(caught.value) == message
    checks.refuse_unknown(allowed, allowed)  # known names pass
