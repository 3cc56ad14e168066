"""Shared fixtures: deterministic seeds for every test."""

import os

# pytest-xdist runs one worker per core (`-n auto`): each worker's torch, and the processes its
# tests start, get their share of the cores rather than all of them each, so that workers do not
# oversubscribe the machine (2 cores: 9 min 17 s with this, 9 min 39 s without, one run each).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

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
