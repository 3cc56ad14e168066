"""The session store the workers share: two stores on one SQLite file stand for two worker processes."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from rnnzoo.pipeline.serve import sessions
from rnnzoo.pipeline.serve.sessions import Run, SessionLimit, SharedSessionStore

ZERO = [np.zeros((2, 1, 3), dtype=np.float32), np.zeros((2, 1, 3), dtype=np.float32)]  # two state arrays (layers, 1, hidden)


def _stores(folder: Path, capacity: int = 10, ttl: float = 600.0) -> tuple[SharedSessionStore, SharedSessionStore]:
    path = folder / "sessions.db"
    SharedSessionStore.initialise(path)
    return SharedSessionStore(path, capacity, ttl, ZERO), SharedSessionStore(path, capacity, ttl, ZERO)


def _adding(amount: float, calls: list[float] | None = None) -> Run:
    """A stand-in for the model: adds ``amount`` to every state value, outputs the state's first value before it."""

    def run(state: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        if calls is not None:
            calls.append(amount)
        return float(state[0].flat[0]), [array + amount for array in state]

    return run


def test_a_step_that_loses_the_race_runs_again_after_the_step_that_won(tmp_path: Path) -> None:
    first, second = _stores(tmp_path)
    key = first.create(ZERO)
    seen_by_first, seen_by_second = first.get(key), second.get(key)  # both read the fresh state
    assert first.advance(key, seen_by_first, 1, _adding(1.0)) == (0.0, 1)
    calls: list[float] = []
    output, steps_seen = second.advance(key, seen_by_second, 2, _adding(10.0, calls))
    assert calls == [10.0, 10.0], "run on the stale state, then again on the kept one"
    assert (output, steps_seen) == (1.0, 3)  # it saw the first step's state
    stored = first.get(key)
    assert stored.steps_seen == 3
    for array in stored.state:
        np.testing.assert_array_equal(array, np.full((2, 1, 3), 11.0, dtype=np.float32))


def test_concurrent_steps_of_one_session_from_two_stores_are_each_applied_once(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    key = stores[0].create(ZERO)
    threads, rounds = 8, 40

    def feed(store: SharedSessionStore) -> None:
        for _ in range(rounds):
            session = store.get(key)
            assert store.advance(key, session, 1, _adding(1.0)) is not None

    workers = [threading.Thread(target=feed, args=(stores[i % 2],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stored = stores[1].get(key)
    assert stored.steps_seen == threads * rounds
    np.testing.assert_array_equal(stored.state[1], np.full((2, 1, 3), threads * rounds, dtype=np.float32))


def test_a_step_that_fails_leaves_the_state_as_it_was(tmp_path: Path) -> None:
    first, second = _stores(tmp_path)
    key = first.create(ZERO)

    def overflow(state: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        raise ValueError("not finite")

    stale = second.get(key)
    first.advance(key, first.get(key), 1, _adding(1.0))
    for session in (first.get(key), stale):  # the first try, and the retry under the write lock
        with pytest.raises(ValueError, match="not finite"):
            second.advance(key, session, 1, overflow)
    assert first.get(key).steps_seen == 1 and float(first.get(key).state[0].max()) == 1.0
    assert second.advance(key, second.get(key), 1, _adding(1.0)) == (1.0, 2)  # the write lock was let go


def test_a_session_deleted_through_one_store_is_gone_for_the_other(tmp_path: Path) -> None:
    first, second = _stores(tmp_path)
    key = first.create(ZERO)
    before = second.get(key)
    assert first.delete(key)
    assert second.get(key) is None and not second.delete(key)
    assert second.advance(key, before, 1, _adding(1.0)) is None  # a step already under way when it was deleted


class Clock:
    """``time.monotonic`` for the store, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_the_limit_and_the_idle_expiry_count_both_stores_sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(sessions, "time", clock)
    first, second = _stores(tmp_path, capacity=2, ttl=10.0)
    idle = first.create(ZERO)
    read_before_expiry = second.get(idle)  # (a read does not count as use)
    used = second.create(ZERO)
    with pytest.raises(SessionLimit, match="all 2 sessions are in use"):
        first.create(ZERO)
    assert len(first) == len(second) == 2
    clock.now += 6.0
    assert first.advance(used, first.get(used), 1, _adding(1.0)) == (0.0, 1)  # a step keeps its session alive
    clock.now += 6.0
    assert second.get(idle) is None and len(first) == 1
    assert second.advance(idle, read_before_expiry, 1, _adding(1.0)) is None  # nor can a step revive it
    second.create(ZERO)  # the expired session's slot is free again
    with pytest.raises(SessionLimit):
        first.create(ZERO)
