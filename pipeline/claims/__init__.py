"""The papers' claims that ``rnnzoo reproduce`` tests, one module each, in the issue's order."""

from __future__ import annotations

import difflib

from rnnzoo.pipeline.claims import (
    chrono_copy,
    indrnn_adding,
    indrnn_smnist,
    janet_adding,
    janet_pmnist,
    janet_smnist,
    phased_async,
    phased_high_res,
    phased_smnist,
    rhn_depth,
    unfolded_lstm,
)
from rnnzoo.pipeline.claims.base import SCALES, Claim

_MODULES = (
    janet_adding,
    janet_smnist,
    janet_pmnist,
    chrono_copy,
    unfolded_lstm,
    phased_async,
    phased_high_res,
    phased_smnist,
    indrnn_adding,
    indrnn_smnist,
    rhn_depth,
)
CLAIMS: dict[str, Claim] = {module.CLAIM.name: module.CLAIM for module in _MODULES}

__all__ = ["CLAIMS", "SCALES", "Claim", "ClaimError", "get"]


class ClaimError(ValueError):
    """An unknown claim or scale, or missing data; the message names what exists."""


def get(name: str) -> Claim:
    """The claim called ``name``; raises ClaimError naming the claims that exist."""
    if name not in CLAIMS:
        close = difflib.get_close_matches(name, list(CLAIMS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ClaimError(f"unknown claim {name!r}{hint}; claims: {', '.join(CLAIMS)}")
    return CLAIMS[name]
