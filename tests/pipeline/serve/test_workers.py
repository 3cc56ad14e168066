"""`rnnzoo serve --workers 2` as a user runs it: one port, two processes, one set of sessions.

Every request below goes on a new connection, which the kernel hands to either worker; a
``GET /health`` first on that connection says which worker (its pid) takes the request after it.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnzoo.pipeline.serve.predictor import Predictor
from tests.pipeline.serve.served import Server, start

SESSIONS = 6
STEPS = 16  # per session, fed one step a request
CLIENTS = 16
MAX_SESSIONS = 8
TTL = 3.0


@pytest.fixture(scope="module")
def store_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tmpdir")  # the server's TMPDIR: where its private store folder goes


@pytest.fixture(scope="module")
def server(exported: Callable[[str], Path], store_folder: Path) -> Iterator[Server]:
    options = ("--workers", "2", "--max-sessions", str(MAX_SESSIONS), "--session-ttl", str(TTL), "--max-length", "40")
    servers = start(exported("adding"), *options, env={"TMPDIR": str(store_folder)})
    started = next(servers)  # one worker answers /health
    try:
        # The other may still be importing torch (seconds on two busy cores): until it answers, the
        # kernel hands every connection to the first, and the tests below would see one worker.
        deadline = time.monotonic() + 120
        while len(_workers(started)) < 2:
            assert time.monotonic() < deadline, "the second worker never answered"
            time.sleep(0.5)
        yield started
    finally:
        servers.close()  # start's own cleanup (its finally): the server stopped


def _on_one_worker(server: Server, method: str, route: str, body: Any = None,
                   wanted: Callable[[int], bool] = lambda worker: True) -> tuple[int, int, dict[str, Any]]:
    """``(worker pid, status, answer)`` of one request, sent on a connection whose /health named a worker ``wanted``
    (new connections are tried until one lands on such a worker: the kernel picks it)."""
    port = int(server.url.rsplit(":", 1)[1])
    for _ in range(200):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", "/health")
            worker = json.loads(connection.getresponse().read())["worker"]
            if not wanted(worker):
                continue
            connection.request(method, route, None if body is None else json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read()
            return worker, response.status, json.loads(text) if text else {}
        finally:
            connection.close()
    raise AssertionError(f"200 connections, none on a worker that fits, for {method} {route}")


def _workers(server: Server) -> set[int]:
    """Both workers' pids, from /health asked on many connections at once."""
    seen: set[int] = set()

    def ask() -> None:
        for _ in range(10):
            seen.add(_on_one_worker(server, "GET", "/health")[0])

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seen


def test_concurrent_steps_on_both_workers_equal_the_model_fed_in_the_order_they_were_applied(server: Server) -> None:
    rng = np.random.default_rng(7)
    steps = rng.random((SESSIONS, STEPS, 2)).astype(np.float32)
    ids = [server.call("POST", "/sessions")[1]["session_id"] for _ in range(SESSIONS)]
    # Every step of every session in one shuffled queue, taken by CLIENTS threads: consecutive steps
    # of a session go to either worker, and some steps of one session run at the same time.
    work = [(s, t) for s in range(SESSIONS) for t in range(STEPS)]
    random.Random(7).shuffle(work)
    answers: dict[tuple[int, int], tuple[int, int, dict[str, Any]]] = {}
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not work:
                    return
                s, t = work.pop()
            answer = _on_one_worker(server, "POST", f"/sessions/{ids[s]}/steps", {"steps": steps[s, t : t + 1].tolist()})
            with lock:
                answers[s, t] = answer

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {status for _, status, _ in answers.values()} == {200}, [a for a in answers.values() if a[1] != 200][:3]
    predictor = Predictor(server.path, max_length=40)  # the same model, in this process: the reference
    switches = 0
    for s in range(SESSIONS):
        # steps_seen says where each step went in the session's sequence: each place exactly once.
        applied = sorted(range(STEPS), key=lambda t: answers[s, t][2]["steps_seen"])
        assert [answers[s, t][2]["steps_seen"] for t in applied] == list(range(1, STEPS + 1)), "a step lost or applied twice"
        state = None
        for t in applied:
            expected, state = predictor.run(steps[s, t : t + 1][None], None, state)
            np.testing.assert_allclose(answers[s, t][2]["predictions"], expected[0], atol=1e-6)
        workers = [answers[s, t][0] for t in applied]
        switches += sum(a != b for a, b in itertools.pairwise(workers))
    assert len({worker for worker, _, _ in answers.values()}) == 2, "every step went to one worker"
    assert switches > 0, "no session had consecutive steps on different workers"
    for session_id in ids:  # the session limit test below starts from none
        assert server.call("DELETE", f"/sessions/{session_id}")[0] == 204


def test_a_session_deleted_on_one_worker_is_unknown_to_the_other(server: Server) -> None:
    session_id = server.call("POST", "/sessions")[1]["session_id"]
    deleter, status, _ = _on_one_worker(server, "DELETE", f"/sessions/{session_id}")
    assert status == 204
    other = lambda worker: worker != deleter
    status, answer = _on_one_worker(server, "POST", f"/sessions/{session_id}/steps", {"steps": [[0.5, 1.0]]}, other)[1:]
    assert status == 404 and session_id in answer["detail"]
    assert _on_one_worker(server, "DELETE", f"/sessions/{session_id}", wanted=other)[1] == 404


def test_the_session_limit_and_idle_expiry_count_every_workers_sessions(server: Server) -> None:
    workers = _workers(server)
    assert len(workers) == 2
    opened = [server.call("POST", "/sessions") for _ in range(MAX_SESSIONS)]
    opened_at = time.monotonic()  # no session is used after this but the one stepped below
    assert {status for status, _ in opened} == {201}
    for worker in workers:  # each worker counts all the sessions, and refuses one more
        this = lambda w, worker=worker: w == worker
        status, answer = _on_one_worker(server, "POST", "/sessions", wanted=this)[1:]
        assert status == 429 and f"all {MAX_SESSIONS} sessions are in use" in answer["detail"]
        assert _on_one_worker(server, "GET", "/health", wanted=this)[2]["sessions"] == MAX_SESSIONS
    kept, gone = opened[0][1]["session_id"], opened[1][1]["session_id"]
    # Idle past the TTL, every session but the one stepped meanwhile expires, for every worker.
    time.sleep(max(0.0, opened_at + 0.6 * TTL - time.monotonic()))
    assert server.call("POST", f"/sessions/{kept}/steps", {"steps": [[0.5, 1.0]]})[0] == 200
    time.sleep(max(0.0, opened_at + TTL + 0.2 - time.monotonic()))
    for worker in workers:
        this = lambda w, worker=worker: w == worker
        assert _on_one_worker(server, "GET", "/health", wanted=this)[2]["sessions"] == 1
        assert _on_one_worker(server, "POST", f"/sessions/{gone}/steps", {"steps": [[0.5, 1.0]]}, this)[1] == 404
    assert server.call("POST", "/sessions")[0] == 201


def test_stopping_the_server_stops_both_workers_and_removes_the_session_store(server: Server, store_folder: Path) -> None:
    workers = _workers(server)
    assert len(workers) == 2 and list(store_folder.glob("rnnzoo-serve-*/sessions.db"))
    assert server.stop() == 0
    for worker in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(worker, 0)  # no orphan left running
    assert not list(store_folder.glob("rnnzoo-serve-*")), "the session store outlived the server"
