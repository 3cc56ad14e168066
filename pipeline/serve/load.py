"""A bounded load test on loopback: N concurrent clients for S seconds against ``/predict``."""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import numpy as np


def example_body(metadata: dict[str, Any], steps: int = 20) -> dict[str, Any]:
    """A valid one-sequence request for the served model, from its /metadata."""
    rng = np.random.default_rng(0)
    if metadata["graph"] == "vector":
        sequence = rng.random(metadata["input_features"]).tolist()
    elif metadata["token_ids"]:
        sequence = rng.integers(0, 2, steps).tolist()
    else:
        sequence = rng.random((steps, metadata["input_features"])).tolist()
    body: dict[str, Any] = {"sequences": [sequence]}
    if metadata["takes_times"]:
        body["times"] = [list(map(float, range(steps)))]
    return body


def run_load(url: str, clients: int, seconds: float, api_key: str | None = None, steps: int = 20) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    metadata = json.load(urllib.request.urlopen(urllib.request.Request(f"{url}/metadata", headers=headers), timeout=10))
    payload = json.dumps(example_body(metadata, steps)).encode()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{url}/predict", payload, headers), timeout=30) as response:
                    response.read()
                    status = response.status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError:
                status = 0  # connection failure
            with lock:
                latencies.append(time.perf_counter() - start)
                statuses[status] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    ordered = sorted(latencies)
    return {
        "clients": clients, "seconds": round(elapsed, 2), "requests": len(latencies), "steps_per_sequence": steps,
        "requests_per_s": len(latencies) / elapsed, "p50_ms": 1e3 * statistics.median(ordered),
        "p99_ms": 1e3 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "errors": sum(n for code, n in statuses.items() if code != 200), "server_errors_5xx": sum(n for code, n in statuses.items() if code >= 500),
        "status_counts": {str(code): n for code, n in sorted(statuses.items())}, "model": {k: metadata.get(k) for k in ("cell", "task", "graph")},
    }
