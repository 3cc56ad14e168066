"""The bench stage's figures: the two sides timed interleaved, the speedup a median of paired ratios
with its spread, and a figure too unsteady to quote marked as such in metrics and tables."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest

from rnnzoo.pipeline import config, files, summary, tracking
from rnnzoo.pipeline.cell_bench import Spread
from rnnzoo.pipeline.stages import bench
from rnnzoo.pipeline.stages.evaluate import evaluate
from rnnzoo.pipeline.stages.export import export
from rnnzoo.pipeline.stages.prepare import prepare
from rnnzoo.pipeline.stages.train import train

TORCH_S, ONNXRUNTIME_S = 0.02, 0.01  # the true speedup: 2


class Machine:
    """Two fake sides on one machine: ``slow`` maps a call's index (either side's) to how many times slower it runs."""

    def __init__(self, slow: Callable[[int, str], float]) -> None:
        self.calls = 0
        self.slow = slow

    def side(self, name: str, seconds: float) -> Callable[[], None]:
        def call() -> None:
            time.sleep(seconds * self.slow(self.calls, name))
            self.calls += 1
        return call

    def speedup(self, repeats: int = 9) -> tuple[list[float], list[float], Spread]:
        return bench.paired_speedup(self.side("torch", TORCH_S), self.side("onnxruntime", ONNXRUNTIME_S), "cpu", 0, repeats)


def test_a_burst_of_load_slows_both_sides_of_a_round_and_the_speedup_stays_true() -> None:
    # Seven calls in a row run 10x slower, whichever side makes them (paired() warms up with calls 0-3):
    # timed side by side in blocks, the burst would land on one side and become the ratio.
    torch_s, onnxruntime_s, speedup = Machine(lambda index, _: 10.0 if 8 <= index <= 14 else 1.0).speedup()
    assert max(torch_s) > 5 * TORCH_S and max(onnxruntime_s) > 5 * ONNXRUNTIME_S, "the burst hit both sides"
    assert speedup.median == pytest.approx(2.0, rel=0.25)
    assert bench.unsteady(speedup), "the round the burst began in disagrees: the spread shows it"


def test_one_stalled_call_leaves_the_median_and_flags_the_figure_unsteady() -> None:
    _, _, speedup = Machine(lambda index, name: 6.0 if index == 10 and name == "onnxruntime" else 1.0).speedup()
    assert speedup.median == pytest.approx(2.0, rel=0.25)
    assert speedup.low < 0.5 and bench.unsteady(speedup)


def test_steady_sides_give_the_true_speedup_unflagged() -> None:
    _, _, speedup = Machine(lambda index, name: 1.0).speedup()
    assert speedup.median == pytest.approx(2.0, rel=0.25)
    assert speedup.low <= speedup.median <= speedup.high and not bench.unsteady(speedup)


def test_unsteady_means_the_paired_ratios_span_more_than_the_documented_factor() -> None:
    assert bench.UNSTEADY_SPREAD == 2.0
    assert not bench.unsteady(Spread(1.5, 1.0, 2.0)) and bench.unsteady(Spread(1.5, 1.0, 2.01))


def _row(length: int, batch: int, speedup: float, low: float, high: float) -> dict:
    return {
        "length": length, "batch": batch, "onnxruntime_p50_ms": 0.5, "onnxruntime_p99_ms": 0.7, "torch_p50_ms": 1.0,
        "torch_p99_ms": 1.2, "onnxruntime_sequences_per_s": batch / 5e-4, "torch_sequences_per_s": batch / 1e-3,
        "speedup_vs_torch": speedup, "speedup_low": low, "speedup_high": high,
        "speedup_unsteady": bench.unsteady(Spread(speedup, low, high)),
    }


RESULT = {
    "threads": 1, "onnxruntime": "onnxruntime==1.0", "torch": "2.0", "lengths": [6], "task_length": 6, "batch_sizes": [1, 4],
    "method": "paired", "rounds": 9, "unsteady_spread": 2.0, "tf32": False,
    "providers": {"CPUExecutionProvider": {"torch_device": "cpu", "hardware": "a CPU, 1 threads", "rows": [
        _row(6, 1, 2.0, 1.9, 2.1), _row(6, 4, 3.0, 0.5, 40.0),
    ]}},
}


def test_metrics_carry_each_speedup_with_its_spread_and_flag() -> None:
    metrics = bench.summary_metrics(RESULT)
    assert metrics["bench.cpu.batch1_speedup_vs_torch"] == 2.0 and metrics["bench.cpu.max_batch_speedup_vs_torch"] == 3.0
    assert (metrics["bench.cpu.batch1_speedup_low"], metrics["bench.cpu.batch1_speedup_high"]) == (1.9, 2.1)
    assert metrics["bench.cpu.batch1_speedup_unsteady"] == 0.0 and metrics["bench.cpu.max_batch_speedup_unsteady"] == 1.0
    assert {"bench.cpu.batch1_p50_ms", "bench.cpu.batch1_p99_ms", "bench.cpu.max_batch_sequences_per_s"} <= set(metrics)


def test_tables_show_the_spread_and_mark_only_the_unsteady_figure(workdir: Path) -> None:
    table = bench.markdown("add-janet (janet, adding)", RESULT)
    rows = [line for line in table.splitlines() if line.startswith("| 6 |")]
    assert rows[0].endswith("| 2.00 (1.90–2.10) |") and rows[1].endswith("| 3.00 (0.50–40.00) unsteady |")
    assert "median (min–max) of 9 paired rounds" in table and "more than 2×" in table
    files.write_json({"detail": RESULT}, files.reports_dir("add-janet") / "bench.json")
    overview = summary.bench_markdown(["add-janet"])
    row = next(line for line in overview.splitlines() if line.startswith("| add-janet |"))
    assert row.endswith("| 2.00 (1.90–2.10) | 4 | 8,000 | 3.00 (0.50–40.00) unsteady |")
    assert "more than 2×" in overview


def test_a_bench_json_from_before_the_paired_method_still_summarises(workdir: Path) -> None:
    old_rows = [{k: v for k, v in row.items() if not k.startswith(("speedup_low", "speedup_high", "speedup_unsteady"))}
                for row in RESULT["providers"]["CPUExecutionProvider"]["rows"]]
    old = {**RESULT, "providers": {"CPUExecutionProvider": {"torch_device": "cpu", "rows": old_rows}}}
    files.write_json({"detail": old}, files.reports_dir("add-janet") / "bench.json")
    row = next(line for line in summary.bench_markdown(["add-janet"]).splitlines() if line.startswith("| add-janet |"))
    assert row.endswith("| 2.00 | 4 | 8,000 | 3.00 |")


def test_bench_stage_records_paired_speedups_in_its_files_and_run(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml")
    prepare(params, "add-janet")
    train(params, "add-janet", progress=False)
    evaluate(params, "add-janet")
    export(params, "add-janet")
    metrics = bench.bench(params, "add-janet")
    detail = json.loads((files.reports_dir("add-janet") / "bench.json").read_text())["detail"]
    assert detail["method"] == "paired" and detail["rounds"] == params.bench.repeats
    for measured in detail["providers"].values():
        for row in measured["rows"]:
            assert row["speedup_low"] <= row["speedup_vs_torch"] <= row["speedup_high"]
            assert row["speedup_unsteady"] == (row["speedup_high"] > bench.UNSTEADY_SPREAD * row["speedup_low"])
    table = (files.reports_dir("add-janet") / "bench.md").read_text()
    assert all(bench.speedup_text(row) in table for m in detail["providers"].values() for row in m["rows"])
    mlflow.set_tracking_uri(tracking.tracking_uri())
    query = "tags.`rnnzoo.experiment` = 'add-janet'"
    run = mlflow.search_runs(search_all_experiments=True, filter_string=query, output_format="list")[0]
    for key in ("batch1_speedup_vs_torch", "batch1_speedup_low", "batch1_speedup_high", "batch1_speedup_unsteady"):
        assert run.data.metrics[f"bench.cpu.{key}"] == metrics[f"bench.cpu.{key}"]
    # DVC's latency plot: one file, so one line, per runtime and length, each in batch order.
    series = sorted((files.reports_dir("add-janet") / "bench_latency").glob("*.json"))
    lines = {name: json.loads(path.read_text()) for name, path in ((p.stem, p) for p in series)}
    measured_rows = [row for m in detail["providers"].values() for row in m["rows"]]
    assert len(lines) == 2 * len({(p, row["length"]) for p, m in detail["providers"].items() for row in m["rows"]})
    for name, rows in lines.items():
        assert len({(row["runtime"], row["length"]) for row in rows}) == 1, name
        assert [row["batch"] for row in rows] == sorted(row["batch"] for row in rows)
    assert sum(len(rows) for rows in lines.values()) == 2 * len(measured_rows)


def test_latency_series_split_by_runtime_and_length_whatever_the_row_order() -> None:
    rows = [
        {"runtime": runtime, "batch": batch, "length": length, "p50_ms": 1.0}
        for batch in (16, 1, 256) for length in (5, 20) for runtime in ("onnxruntime CPU", "torch cpu")
    ]
    series = bench.latency_series(rows)
    assert sorted(series) == ["onnxruntime_CPU_T20", "onnxruntime_CPU_T5", "torch_cpu_T20", "torch_cpu_T5"]
    assert all([row["batch"] for row in each] == [1, 16, 256] for each in series.values())
