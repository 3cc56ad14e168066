"""Streaming sessions: the recurrent state the server keeps between calls, bounded and expiring."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np


class SessionLimit(RuntimeError):
    """Every session slot is taken."""


@dataclass
class Session:
    state: list[np.ndarray]  # each (layers, 1, hidden)
    last_used: float
    steps_seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)  # one request at a time per stream


class SessionStore:
    """At most ``capacity`` sessions; one idle longer than ``ttl`` seconds is dropped."""

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
                raise SessionLimit(f"all {self.capacity} sessions are in use; delete one or retry after {self.ttl:.0f} s idle expiry")
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

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._sessions.pop(key, None) is not None

    def __len__(self) -> int:
        with self._lock:
            self._expire(time.monotonic())
            return len(self._sessions)
