"""The closing report of a pipeline run: final metrics beside baselines, plot paths, the UI command."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from rnnzoo.pipeline import files, tracking
from rnnzoo.pipeline.config import Config

# What the report reads of each metrics.json.
METRICS = ("valid.loss", "baseline_loss", "valid.loss_over_baseline")


def table(config: Config, names: list[str]) -> Table:
    result = Table(title="rnnzoo: final metrics on the held-out split")
    for column in ("experiment", "cell", "task", "valid loss", "baseline", "loss / baseline", "accuracy", "perplexity"):
        result.add_column(column, justify="left" if column in ("experiment", "cell", "task") else "right")
    for name in names:
        exp = config.experiment(name)
        path = files.reports_dir(name) / "metrics.json"
        if not path.is_file():
            result.add_row(name, exp.cell, exp.task, "not evaluated", "", "", "", "")
            continue
        metrics = files.load_json(path, "metrics file", f"rnnzoo evaluate {name}", dict, METRICS)
        optional = [metrics.get(key) for key in ("valid.accuracy", "valid.perplexity")]
        result.add_row(
            name, exp.cell, exp.task, f"{metrics['valid.loss']:.4g}", f"{metrics['baseline_loss']:.4g}",
            f"{metrics['valid.loss_over_baseline']:.3f}", *("" if value is None else f"{value:.3f}" for value in optional),
        )
    return result


def bench_markdown(names: list[str]) -> str | None:
    """One row per benchmarked experiment and provider, at the task's length: batch-1 latency and
    largest-batch throughput of onnxruntime, each against torch eager on the same device."""
    from rnnzoo.pipeline.stages.bench import UNSTEADY_SPREAD, speedup_text  # how a speedup is judged and shown: one place

    rows = []
    for name in names:
        path = files.reports_dir(name) / "bench.json"
        if not path.is_file():
            continue
        try:
            rows += _bench_rows(name, files.load_json(path, "bench file", f"rnnzoo bench {name}")["detail"], speedup_text)
        except (KeyError, TypeError, StopIteration, ValueError) as error:
            if isinstance(error, ValueError) and str(path) in str(error):  # load_json's own message
                raise
            raise ValueError(f"{path} is not a bench file that `rnnzoo bench {name}` writes ({type(error).__name__}: "
                             f"{error}): run `rnnzoo bench {name}` to remake it") from None
    if not rows:
        return None
    return _bench_table(rows, UNSTEADY_SPREAD)


def _bench_rows(name: str, detail: dict, speedup_text: Any) -> list[str]:
    """The table's rows of one experiment's bench ``detail``, one per provider."""
    rows = []
    for provider, measured in detail["providers"].items():
        at_length = [r for r in measured["rows"] if r["length"] == detail["task_length"]]
        first = next(r for r in at_length if r["batch"] == 1)  # the config requires batch 1
        last = max(at_length, key=lambda r: r["batch"])
        length = "-" if detail["task_length"] is None else detail["task_length"]
        hardware = measured.get("hardware", "not recorded")  # bench.json files older than this column
        rows.append(
            f"| {name} | {length} | {provider.removesuffix('ExecutionProvider')} | {hardware} "
            f"| {first['onnxruntime_p50_ms']:.3f} | {speedup_text(first)} "
            f"| {last['batch']} | {last['onnxruntime_sequences_per_s']:,.0f} | {speedup_text(last)} |"
        )
    return rows


def _bench_table(rows: list[str], unsteady_spread: float) -> str:
    return "\n".join([
        (
            "onnxruntime against torch eager on the same device and inputs (speedup > 1: onnxruntime is faster): "
            "the median (min–max) of the paired rounds' torch time / onnxruntime time, the two sides interleaved; "
            f"*unsteady*: the rounds' ratios span more than {unsteady_spread:g}×, too wide to quote — rerun on a quieter machine."
        ),
        "",
        "| experiment | T | provider | hardware | batch-1 p50 ms | speedup | max batch | sequences/s | speedup |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ]) + "\n"


def footer(names: list[str]) -> list[str]:
    lines = ["plots:"]
    for name in names:
        folder = files.reports_dir(name) / "plots"
        lines += [f"  {path}" for path in sorted(folder.glob("*.png"))]
    lines.append(f"open the MLflow UI on these runs:  {tracking.ui_command()}")
    return lines
