"""Does `rnnzoo serve --workers 2` stream more steps than one worker? (issue: --workers N)

Starts one server per worker count on loopback, all at once, over MODEL (default: an untrained
JANET exported with adding-janet's shapes, hidden 32: the speed does not depend on the weights).
Then, round by round, the configurations take turns (the order alternates): 32 client threads
each open a session and feed it one step a request for --seconds, each request on a new
connection as `rnnzoo load-test` sends them (so the kernel hands consecutive steps of a session
to any worker; --keep-alive keeps one connection a client). Prints requests/s and p50/p99
latency per configuration, median and min-max over the rounds, the errors (there should be
none), and the cores the server, the clients (they share the machine) and anything else used
(Linux; "other" above ~0.1 means something else ran meanwhile: a noisy run).
Last, the cost of one step in each session store alone (no model, no HTTP).

    python benchmarks/serve_workers.py [MODEL] [--clients 32 --seconds 10 --rounds 5 --workers 1 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def export_default(folder: Path) -> Path:
    """adding-janet's model (params.yaml: janet, hidden 32, max_timescale 30, length 30), untrained,
    exported as `rnnzoo export` exports a JANET (its Scan loop)."""
    import torch

    from rnnzoo.pipeline import onnx_export
    from rnnzoo.pipeline.model import build_model
    from rnnzoo.pipeline.tasks import make_task

    task = make_task("adding", {"length": 30, "train_size": 4, "valid_size": 4})
    spec = task.spec(task.prepare(None, 0))
    torch.manual_seed(0)
    model = build_model("janet", spec, 32, max_timescale=30, time_loop="scan", fused=False).eval()
    return onnx_export.export_graph(model, "sequence", folder / "sequence.onnx", {"cell": "janet", "task": "adding"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "rnnzoo.pipeline.cli", "serve", str(model), "--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
            return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"`{' '.join(command)}` did not start") from None
            time.sleep(0.2)


def one_step(metadata: dict[str, Any]) -> bytes:
    """A /steps body of one step the served model takes, from its /metadata."""
    if not metadata["streaming"]:
        raise SystemExit(f"this model cannot stream: {metadata['streaming_refused_because']}")
    rng = np.random.default_rng(0)
    step = int(rng.integers(0, metadata["vocabulary"])) if metadata["token_ids"] else rng.random(metadata["input_features"]).tolist()
    return json.dumps({"steps": [step]}).encode()


def busy_seconds() -> float:
    """CPU seconds every process on the machine has used (Linux: /proc/stat's user, nice and system; 0 elsewhere)."""
    try:
        user, nice, system = (int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:4])
    except OSError:
        return 0.0
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def server_seconds(pid: int) -> float:
    """CPU seconds of the server: its process and its workers (Linux: /proc; 0 elsewhere)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        total = 0
        for each in [pid, *map(int, children)]:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    except OSError:
        return 0.0
    return total / os.sysconf("SC_CLK_TCK")


def stream(port: int, clients: int, seconds: float, keep_alive: bool, server_pid: int = 0) -> dict[str, Any]:
    """``clients`` threads, each with one session, feeding it steps for ``seconds``; with the cores the
    server, these clients, and anything else on the machine used meanwhile."""
    metadata = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/metadata", timeout=10))
    body, headers = one_step(metadata), {"Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    opened, go = threading.Barrier(clients + 1), threading.Event()
    deadline = [0.0]

    def request(connection: http.client.HTTPConnection, method: str, route: str, data: bytes | None = None) -> tuple[int, bytes]:
        connection.request(method, route, data, headers)
        response = connection.getresponse()
        return response.status, response.read()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        session = json.loads(request(connection, "POST", "/sessions")[1])["session_id"]
        opened.wait()
        go.wait()
        while time.monotonic() < deadline[0]:
            if not keep_alive:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            began = time.perf_counter()
            try:
                status = request(connection, "POST", f"/sessions/{session}/steps", body)[0]
            except (OSError, http.client.HTTPException):
                status = 0  # a connection failure
                connection.close()
            with lock:
                latencies.append(time.perf_counter() - began)
                statuses[status] += 1
        connection.close()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        request(connection, "DELETE", f"/sessions/{session}")
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    opened.wait()  # every session open: the clock starts
    cpu, machine, server = os.times(), busy_seconds(), server_seconds(server_pid)
    began = time.monotonic()
    deadline[0] = began + seconds
    go.set()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    used = os.times()
    client_cores = (used.user + used.system - cpu.user - cpu.system) / elapsed
    server_cores = (server_seconds(server_pid) - server) / elapsed
    ordered = sorted(latencies)
    return {
        "requests_per_s": len(ordered) / elapsed, "p50_ms": 1e3 * statistics.median(ordered),
        "p99_ms": 1e3 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], "requests": len(ordered),
        "errors": sum(n for status, n in statuses.items() if status != 200),
        "server_cores": server_cores, "client_cores": client_cores,
        "other_cores": (busy_seconds() - machine) / elapsed - server_cores - client_cores,  # other work on the machine: noise
    }


def store_step_us(rounds: int = 5, steps: int = 2000) -> dict[str, float]:
    """Microseconds one step (get, then advance with a model that returns its state) takes in each store, median of ``rounds``."""
    from rnnzoo.pipeline.serve.sessions import SessionStore, SharedSessionStore

    state = [np.zeros((1, 1, 32), dtype=np.float32)] * 2  # adding-janet's (c, h): (layers, 1, hidden)
    with tempfile.TemporaryDirectory() as folder:
        SharedSessionStore.initialise(Path(folder) / "sessions.db")
        stores = {"in-process": SessionStore(1000, 600.0), "shared (SQLite)": SharedSessionStore(Path(folder) / "sessions.db", 1000, 600.0, state)}
        timings: dict[str, list[float]] = {name: [] for name in stores}
        for _ in range(rounds):
            for name, store in stores.items():
                key = store.create(state)
                began = time.perf_counter()
                for _ in range(steps):
                    store.advance(key, store.get(key), 1, lambda s: (None, s))
                timings[name].append(1e6 * (time.perf_counter() - began) / steps)
                store.delete(key)
    return {name: statistics.median(values) for name, values in timings.items()}


def spread(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", type=Path, help="an ONNX sequence graph (default: adding-janet's shapes, untrained)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each configuration, taking turns")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="the worker counts to compare")
    parser.add_argument("--keep-alive", action="store_true", help="one connection a client (its steps then stay on one worker)")
    parser.add_argument("--out", type=Path, help="also write every run as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or export_default(Path(folder))
        servers = {workers: start_server(model, workers) for workers in args.workers}
        try:
            runs: dict[int, list[dict[str, Any]]] = {workers: [] for workers in args.workers}
            for workers, (_, port) in servers.items():
                stream(port, args.clients, 2.0, args.keep_alive)  # warm up: imports, thread pools, the first sessions
            for round_index in range(args.rounds):
                order = args.workers if round_index % 2 == 0 else args.workers[::-1]
                for workers in order:
                    process, port = servers[workers]
                    run = stream(port, args.clients, args.seconds, args.keep_alive, process.pid)
                    runs[workers].append(run)
                    print(f"round {round_index + 1}, --workers {workers}: {run['requests_per_s']:.0f} requests/s, "
                          f"cores: server {run['server_cores']:.2f}, clients {run['client_cores']:.2f}, other {run['other_cores']:.2f}", file=sys.stderr)
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=30)
    connections = "one connection a client" if args.keep_alive else "a new connection a request"
    print(f"{args.clients} clients streaming one step a request ({connections}), {args.rounds} runs of {args.seconds:g} s each, "
          f"interleaved; {os.cpu_count()} CPUs; model {args.model or 'adding-janet shapes (janet, hidden 32)'}")
    print("| --workers | requests/s | p50 ms | p99 ms | errors | cores: server | clients | other |")
    print("|---|---|---|---|---|---|---|---|")
    for workers, results in runs.items():
        column = {key: [run[key] for run in results] for key in results[0]}
        print(f"| {workers} | {spread(column['requests_per_s'], 0)} | {spread(column['p50_ms'], 1)} | {spread(column['p99_ms'], 1)} "
              f"| {sum(column['errors'])} of {sum(column['requests'])} | {spread(column['server_cores'], 2)} | {spread(column['client_cores'], 2)} "
              f"| {spread(column['other_cores'], 2)} |")
    costs = store_step_us()
    print("one step in the store alone (get + advance, no model): " + ", ".join(f"{name} {us:.1f} µs" for name, us in costs.items()))
    if args.out:
        args.out.write_text(json.dumps({"runs": {str(k): v for k, v in runs.items()}, "store_step_us": costs}, indent=1))


if __name__ == "__main__":
    main()
