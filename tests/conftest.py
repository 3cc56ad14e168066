"""Shared fixtures: deterministic seeds for every test."""

import os

# Without a GPU, Triton's interpreter runs the CUDA loops' kernels on the CPU (tests/cells/
# test_triton_loops.py). It must be set before triton compiles any kernel, so here, first.
try:
    import torch

    _has_cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Test modules import mlflow before pipeline.tracking turns its telemetry off: off from the start.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
