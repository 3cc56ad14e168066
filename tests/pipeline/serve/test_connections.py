"""The served app behind uvicorn, over raw sockets: what a slow, silent or oversized client gets, and the connection bound."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn
from fastapi import FastAPI

from rnnzoo.pipeline.serve.connections import uvicorn_options

IDLE = 0.5  # seconds: the idle timeout of the server under test


@contextlib.contextmanager
def _serve(app: FastAPI, idle_timeout: float, limit_concurrency: int) -> Iterator[int]:
    """uvicorn on a free loopback port in a thread, with the options `rnnzoo serve` passes; yields the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **uvicorn_options(idle_timeout, limit_concurrency)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def port(app_for: Callable[..., FastAPI]) -> Iterator[int]:
    with _serve(app_for("adding", max_body_bytes=20_000, body_timeout=0.5), IDLE, 64) as port:
        yield port


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a timeout fails the test: the server kept it open)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _head(method: str, route: str, *headers: str) -> bytes:
    return "\r\n".join([f"{method} {route} HTTP/1.1", "Host: localhost", "Content-Type: application/json", *headers, "", ""]).encode()


def test_a_chunked_body_under_a_small_content_length_gets_413_not_read_whole(port: int) -> None:
    sock = _connect(port)
    sock.sendall(_head("POST", "/predict", "Content-Length: 10", "Transfer-Encoding: chunked"))
    piece = b"[[0.5, 1.0]], " * 700  # ~10 kB a chunk, of a 7.7 MB body
    sent = [0]

    def send() -> None:
        try:
            while sent[0] < 7_700_000:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                sent[0] += len(piece)
        except OSError:  # the server closed the connection after its 413
            pass

    sender = threading.Thread(target=send)
    sender.start()
    answer = sock.recv(65536)
    sender.join(10)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent[0] < 7_700_000, "the server read the whole oversized body"


def test_a_body_that_never_arrives_gets_408_and_the_connection_is_closed(port: int) -> None:
    sock = _connect(port)
    started = time.monotonic()
    sock.sendall(_head("POST", "/predict", "Content-Length: 100") + b'{"sequences": ')
    answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408") and b"within 0.5 s" in answer
    assert time.monotonic() - started < 3.0


# name -> what the client sends before going quiet, or sends a byte at a time
SILENT = {"nothing": b"", "half its headers": b"POST /predict HTTP/1.1\r\nHost: loc"}


@pytest.mark.parametrize("case", sorted(SILENT))
def test_a_connection_that_sends_no_whole_request_is_closed_after_the_idle_timeout(port: int, case: str) -> None:
    sock = _connect(port)
    started = time.monotonic()
    sock.sendall(SILENT[case])
    assert _read_all(sock) == b""
    assert IDLE <= time.monotonic() - started + 0.05 < IDLE + 2.0


def test_headers_trickled_a_byte_at_a_time_do_not_keep_a_connection(port: int) -> None:
    sock = _connect(port)
    sock.settimeout(0.1)
    started = time.monotonic()
    closed = False
    for byte in b"POST /predict HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 100:
        try:
            sock.sendall(bytes([byte]))
            closed = sock.recv(1) == b""
        except TimeoutError:
            continue
        except OSError:
            closed = True
        if closed:
            break
    assert closed and time.monotonic() - started < IDLE + 2.0


def test_a_keep_alive_connection_idle_after_a_response_is_closed(port: int) -> None:
    sock = _connect(port)
    sock.sendall(_head("GET", "/health"))
    started = time.monotonic()
    answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200") and time.monotonic() - started < IDLE + 2.0


def test_past_the_concurrency_limit_requests_get_503(app_for: Callable[..., FastAPI]) -> None:
    with _serve(app_for("adding"), idle_timeout=5.0, limit_concurrency=2) as port:
        idle = [_connect(port), _connect(port)]
        time.sleep(0.2)  # let the server accept them
        sock = _connect(port)
        sock.sendall(_head("GET", "/health", "Connection: close"))
        assert _read_all(sock).startswith(b"HTTP/1.1 503")
        for each in idle:
            each.close()
        time.sleep(0.2)
        sock = _connect(port)
        sock.sendall(_head("GET", "/health", "Connection: close"))
        assert _read_all(sock).startswith(b"HTTP/1.1 200")
