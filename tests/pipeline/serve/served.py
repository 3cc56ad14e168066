"""`rnnzoo serve` in a subprocess on a free loopback port, and a client for it."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class Server:
    url: str
    path: Path
    key: str | None
    process: subprocess.Popen | None = None

    def call(self, method: str, route: str, body: object = None, raw: bytes | None = None, key: str | None = "default") -> tuple[int, dict]:
        key = self.key if key == "default" else key
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
        request = urllib.request.Request(f"{self.url}{route}", data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
                return response.status, json.loads(text) if text and response.headers.get_content_type() == "application/json" else {}
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def stop(self) -> int | None:
        """SIGTERM, and the exit code once the server has stopped (``None`` if it was stopped before)."""
        if self.process is None or self.process.returncode is not None:
            return None
        self.process.terminate()
        return self.process.wait(timeout=30)


def start(path: Path, *options: str, key: str | None = None, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``rnnzoo serve PATH OPTIONS`` until /health answers; stopped after the ``yield``."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), **(env or {})}
    command = [sys.executable, "-m", "rnnzoo.pipeline.cli", "serve", str(path), "--port", str(port), *options]
    if key:
        command += ["--api-key", key]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(f"http://127.0.0.1:{port}", path, key, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if server.call("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            server.stop()
