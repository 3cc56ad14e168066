"""``rnnzoo serve --workers N``: N processes behind one port, sharing their streaming sessions.

uvicorn's own supervisor runs them: the parent binds the socket, starts N workers (spawned, so
each imports the app fresh and opens its own onnxruntime session), accepts on none of it itself,
restarts a worker that dies, and on SIGTERM or Ctrl-C stops them all and waits for them. It
takes the app by import string, :data:`WORKER_APP`, a factory that reads its settings from the
environment variable :data:`SETTINGS_VARIABLE` (which the workers inherit: nothing of them, the
API key included, is written to disk). The kernel hands each new connection to one worker, so
consecutive steps of one session may land on different workers: the sessions live in one SQLite
file in a folder only this user can read (``tempfile.mkdtemp``), made before the workers start
and removed when the server stops (see sessions.SharedSessionStore).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI

WORKER_APP = "rnnzoo.pipeline.serve.workers:worker_app"
SETTINGS_VARIABLE = "RNNZOO_SERVE_WORKER"
STORE_FILE = "sessions.db"
WORKERS_PER_CPU = 4  # the most --workers allows: past it, workers only wait for one another


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """What every worker needs to build the app the parent checked; ``store`` is the shared SQLite file."""

    model: str  # the ONNX file, resolved by the parent (an MLflow URI is fetched once)
    provider: str  # the provider the parent chose (auto already resolved)
    max_length: int
    api_key: str | None
    max_sessions: int
    session_ttl: float
    max_batch: int
    max_body_bytes: int
    body_timeout: float
    store: str = ""


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_workers(workers: int) -> None:
    """Raises ValueError naming ``workers`` and the allowed range, 1 to :data:`WORKERS_PER_CPU` x the usable CPUs."""
    cpus = usable_cpus()
    most = WORKERS_PER_CPU * cpus
    if not 1 <= workers <= most:
        raise ValueError(f"--workers is {workers}: it must be from 1 to {most} ({WORKERS_PER_CPU} per CPU, {cpus} here)")


@contextlib.contextmanager
def shared_sessions(settings: WorkerSettings) -> Iterator[WorkerSettings]:
    """A private folder with an empty session store, and the settings in the environment the workers
    inherit, for the duration of the block; the folder and the variable are gone after it."""
    folder = Path(tempfile.mkdtemp(prefix="rnnzoo-serve-"))  # mode 0700: the states are this user's alone
    try:
        from rnnzoo.pipeline.serve.sessions import SharedSessionStore

        store = folder / STORE_FILE
        SharedSessionStore.initialise(store)
        settings = dataclasses.replace(settings, store=str(store))
        os.environ[SETTINGS_VARIABLE] = json.dumps(dataclasses.asdict(settings))
        yield settings
    finally:
        os.environ.pop(SETTINGS_VARIABLE, None)
        shutil.rmtree(folder, ignore_errors=True)


def worker_app() -> FastAPI:
    """The app of one worker (uvicorn calls it in each worker process): the model, and the shared sessions."""
    from rnnzoo.pipeline.serve.app import create_app
    from rnnzoo.pipeline.serve.predictor import Predictor
    from rnnzoo.pipeline.serve.sessions import SharedSessionStore

    settings = WorkerSettings(**json.loads(os.environ[SETTINGS_VARIABLE]))
    predictor = Predictor(Path(settings.model), settings.max_length, provider=settings.provider)
    template = predictor.zero_state(1) if predictor.state_shape is not None else []  # a vector graph has no state
    store = SharedSessionStore(Path(settings.store), settings.max_sessions, settings.session_ttl, template)
    return create_app(predictor, settings.api_key, settings.max_sessions, settings.session_ttl, settings.max_batch,
                      settings.max_body_bytes, settings.body_timeout, store=store)
