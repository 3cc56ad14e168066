"""Streaming sessions: the recurrent state the server keeps between calls, bounded and expiring.

Two stores with one interface. :class:`SessionStore` keeps the sessions in this process's memory
(``rnnzoo serve`` with one worker). :class:`SharedSessionStore` keeps them in one SQLite file in
WAL mode that every worker process opens (``--workers N``), so any worker can take any step of
any session, and the limit and the idle expiry count every worker's sessions.

A step is ``get`` (the session as it is now), then ``advance`` (run the model on that state and
keep the new one). The shared store runs the model outside any lock and writes the new state
only if the session has not moved since it was read (its ``steps_seen`` grows with every step,
so it versions the state); a step that lost that race runs again on the newer state inside a
write transaction, which no other step can interleave with. So two concurrent steps of one
session apply one after the other, none is lost and none is applied twice, while steps of
different sessions never wait on each other's model runs.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# What a step does with a session's state: the model's outputs and the state after them.
Run = Callable[[list[np.ndarray]], tuple[Any, list[np.ndarray]]]


class SessionLimit(RuntimeError):
    """Every session slot is taken."""


def _limit(capacity: int, ttl: float) -> SessionLimit:
    return SessionLimit(f"all {capacity} sessions are in use; delete one or retry after {ttl:.0f} s idle expiry")


@dataclass
class Session:
    state: list[np.ndarray]  # each (layers, 1, hidden)
    last_used: float
    steps_seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)  # one request at a time per stream (in-process store)


class Store(Protocol):
    shared: bool  # whether other processes see the same sessions

    def create(self, state: list[np.ndarray]) -> str: ...

    def get(self, key: str) -> Session | None: ...

    def advance(self, key: str, session: Session, steps: int, run: Run) -> tuple[Any, int] | None: ...

    def delete(self, key: str) -> bool: ...

    def __len__(self) -> int: ...


class SessionStore:
    """At most ``capacity`` sessions in this process; one idle longer than ``ttl`` seconds is dropped."""

    shared = False

    def __init__(self, capacity: int, ttl: float) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        for key in [key for key, s in self._sessions.items() if now - s.last_used > self.ttl]:
            del self._sessions[key]

    def create(self, state: list[np.ndarray]) -> str:
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= self.capacity:
                raise _limit(self.capacity, self.ttl)
            key = uuid.uuid4().hex
            self._sessions[key] = Session(state, now)
            return key

    def get(self, key: str) -> Session | None:
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(key)
            if session is not None:
                session.last_used = now
            return session

    def advance(self, key: str, session: Session, steps: int, run: Run) -> tuple[Any, int]:
        """``run`` on the session's state, under its lock; the outputs and the steps seen after them."""
        with session.lock:
            output, session.state = run(session.state)
            session.steps_seen += steps
            return output, session.steps_seen

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._sessions.pop(key, None) is not None

    def __len__(self) -> int:
        with self._lock:
            self._expire(time.monotonic())
            return len(self._sessions)


# Seconds a statement waits for another process's write transaction (they last one model run at most).
BUSY_TIMEOUT = 30.0
SCHEMA = """CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, state BLOB NOT NULL, last_used REAL NOT NULL, steps_seen INTEGER NOT NULL
) WITHOUT ROWID"""


class SharedSessionStore:
    """The sessions of every worker in the SQLite file ``path`` (made by :meth:`initialise`):
    at most ``capacity`` in all, one idle longer than ``ttl`` seconds is dropped.

    ``template`` is a state of the served model (its zero state; none for a model without one):
    every state is stored as the raw float32 bytes of its arrays stacked, ``(len(template), layers,
    1, hidden)``. Idle times are ``time.monotonic()``, one clock for every process on the machine
    (CLOCK_MONOTONIC on Linux).
    """

    shared = True

    def __init__(self, path: Path, capacity: int, ttl: float, template: list[np.ndarray]) -> None:
        self.path = path
        self.capacity = capacity
        self.ttl = ttl
        self._shape = (len(template), *template[0].shape) if template else (0,)
        self._local = threading.local()  # a connection per thread: sqlite3 connections are not shared across threads

    @staticmethod
    def initialise(path: Path) -> None:
        """The empty store: WAL lets readers go on while one process writes (the mode stays with the file)."""
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)
            db.commit()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)  # autocommit, but for BEGIN below
            # The file lives as long as the server, and so do its sessions: no fsync for a machine crash to survive.
            db.execute("PRAGMA synchronous=OFF")
            self._local.db = db
        return db

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A transaction that holds the write lock from its start: what it reads no other writer changes before it commits."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _blob(self, state: list[np.ndarray]) -> bytes:
        return np.stack(state).astype(np.float32, copy=False).tobytes()  # (S, layers, 1, hidden)

    def _state(self, blob: bytes) -> list[np.ndarray]:
        return list(np.frombuffer(blob, dtype=np.float32).reshape(self._shape).copy())

    def create(self, state: list[np.ndarray]) -> str:
        key = uuid.uuid4().hex
        with self._writing() as db:
            now = time.monotonic()
            db.execute("DELETE FROM sessions WHERE last_used < ?", (now - self.ttl,))
            (count,) = db.execute("SELECT count(*) FROM sessions").fetchone()
            full = count >= self.capacity
            if not full:
                db.execute("INSERT INTO sessions VALUES (?, ?, ?, 0)", (key, self._blob(state), now))
        if full:  # raised after the commit: the expired sessions stay deleted
            raise _limit(self.capacity, self.ttl)
        return key

    def get(self, key: str) -> Session | None:
        """The session as stored now (a copy: :meth:`advance` writes it back), or ``None`` if unknown or expired."""
        now = time.monotonic()
        row = self._live_row(self._db(), key, now)
        return None if row is None else Session(self._state(row[0]), now, row[1])

    def _live_row(self, db: sqlite3.Connection, key: str, now: float) -> tuple[bytes, int] | None:
        """``(state, steps_seen)`` of the session ``key`` unless it is unknown or expired at ``now``."""
        return db.execute("SELECT state, steps_seen FROM sessions WHERE id = ? AND last_used >= ?", (key, now - self.ttl)).fetchone()

    def advance(self, key: str, session: Session, steps: int, run: Run) -> tuple[Any, int] | None:
        """``run`` on the state ``get`` read, kept if no other step came first; else ``run`` again on the
        newer state under the write lock. The outputs and the steps seen, or ``None`` if the session
        was deleted or expired meanwhile."""
        output, state = run(session.state)
        now = time.monotonic()
        written = self._db().execute(
            "UPDATE sessions SET state = ?, steps_seen = ?, last_used = ? WHERE id = ? AND steps_seen = ? AND last_used >= ?",
            (self._blob(state), session.steps_seen + steps, now, key, session.steps_seen, now - self.ttl),
        ).rowcount
        if written:
            return output, session.steps_seen + steps
        with self._writing() as db:  # another step of this session was kept first: this one goes after it
            now = time.monotonic()
            row = self._live_row(db, key, now)
            if row is None:
                return None
            output, state = run(self._state(row[0]))
            db.execute("UPDATE sessions SET state = ?, steps_seen = ?, last_used = ? WHERE id = ?", (self._blob(state), row[1] + steps, now, key))
        return output, row[1] + steps

    def delete(self, key: str) -> bool:
        return self._db().execute("DELETE FROM sessions WHERE id = ?", (key,)).rowcount > 0

    def __len__(self) -> int:
        (count,) = self._db().execute("SELECT count(*) FROM sessions WHERE last_used >= ?", (time.monotonic() - self.ttl,)).fetchone()
        return int(count)
