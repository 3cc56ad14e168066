"""Fused time loops: a whole sequence in one op per layer direction, forward and backward.

``cells.layer.RecurrentLayer`` runs a cell through its fused loop (``RecurrentCell.fused_loop``)
when ``fused=True`` (the default), ``time_loop="python"``, and ``available(device)``; otherwise
it runs the reference Python loop over ``recurrent_step``, which the tests hold the fused loops
to (outputs, final state and every gradient).
"""

from __future__ import annotations

import torch

from cells.loops import native, ops  # noqa: F401  ops: the schemas, defined on import


# Traced as a constant by torch.compile: the answer (a build on disk) does not change within a process.
@torch.compiler.assume_constant_result
def available(device: torch.device) -> bool:
    """Whether fused loop kernels exist for ``device`` (CPU: the C++ build, made on first call)."""
    if device.type == "cpu":
        return native.load()
    return False
