"""Stage ``bench``: onnxruntime inference against torch eager, on the same inputs, in one process.

For each provider (CPU, and CUDA where onnxruntime and torch both see a GPU) and for torch
eager on the matching device: latency p50/p99 at batch 1 and throughput across batch sizes, at
a few sequence lengths, after warm-up, with thread counts set and recorded. Writes
``reports/<experiment>/bench.json`` (DVC metrics), ``bench_latency/`` (one file per runtime and
length, so DVC draws one line each) and a latency-vs-batch PNG (DVC plots), and MLflow metrics.

The two sides are timed **interleaved**, call by call, the side that goes first alternating
(:func:`pipeline.cell_bench.paired`, the cell bench's method): a stall or a burst of load on a
shared machine then slows both sides of a round alike, instead of one side's whole block. Each
round gives one paired ratio, torch time / onnxruntime time; the speedup is their median, shown
with their min–max. A figure is *unsteady* when its ratios span more than ``UNSTEADY_SPREAD``
(max / min): the rounds disagree too much to quote it, rerun on a quieter machine.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnzoo.cells.loops.host_memory import keep_freed_memory
from rnnzoo.cells.loops.native import cpu_name
from rnnzoo.pipeline import cell_bench, files, onnx_export, outputs, plots, runtime, tracking
from rnnzoo.pipeline.config import BenchConfig, Config
from rnnzoo.pipeline.model import SequenceModel, VectorModel
from rnnzoo.pipeline.model_record import ModelRecord

UNSTEADY_SPREAD = 2.0  # max / min of a figure's paired ratios past which it is flagged unsteady


def paired_speedup(
    torch_call: Callable[[], Any], onnxruntime_call: Callable[[], Any], device: str, warmup: int, repeats: int
) -> tuple[list[float], list[float], cell_bench.Spread]:
    """Seconds per call of each side over ``repeats`` interleaved rounds, and the paired ratios'
    (torch / onnxruntime: the speedup) median and min–max."""
    for _ in range(warmup):
        torch_call()
        onnxruntime_call()
    # One call a side and round: p50 and p99 stay per-call figures.
    torch_s, onnxruntime_s = cell_bench.paired(torch_call, onnxruntime_call, torch.device(device), rounds=repeats, block=1)
    return torch_s, onnxruntime_s, cell_bench.Spread.of([t / o for t, o in zip(torch_s, onnxruntime_s)])


def unsteady(speedup: cell_bench.Spread) -> bool:
    """The rule: the paired ratios' max over min exceeds UNSTEADY_SPREAD (the rounds disagree too much)."""
    return speedup.high > UNSTEADY_SPREAD * speedup.low


def speedup_text(row: dict[str, Any]) -> str:
    """``median (min–max)``, marked where unsteady; a row from before the paired method shows its one figure."""
    if "speedup_low" not in row:
        return f"{row['speedup_vs_torch']:.2f}"
    flag = " unsteady" if row["speedup_unsteady"] else ""
    return f"{row['speedup_vs_torch']:.2f} ({row['speedup_low']:.2f}–{row['speedup_high']:.2f}){flag}"


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _hardware(device: str, threads: int) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else f"{cpu_name()}, {threads} threads"


def _lengths(spec_steps: int | None) -> Sequence[int | None]:  # a list; Sequence as a list[int] is no list[int | None]
    if spec_steps is None:
        return [None]
    return sorted({max(1, spec_steps // 4), spec_steps, 2 * spec_steps})


def bench_model(graph: str, path: Path, model: SequenceModel | VectorModel, steps: int | None, config: BenchConfig) -> dict[str, Any]:
    """Measurements of one exported graph against its torch model."""
    kept = keep_freed_memory()  # torch as `rnnzoo train` runs it (onnxruntime keeps its own memory arena)
    threads = config.threads or torch.get_num_threads()
    previous = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.set_num_threads(threads)
    # Full float32 on both sides: onnxruntime's CUDA sessions run with TF32 off (runtime.provider_list),
    # and cuDNN's RNN kernels would otherwise use it for torch.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return {**_measure(graph, path, model, steps, config, threads), "tf32": False, "freed_memory_kept": kept}
    finally:  # later stages in this process run as before
        torch.set_num_threads(previous[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous[1:]


def _time_both(
    module: torch.nn.Module, inputs: list[torch.Tensor], session: Any, feeds: dict[str, np.ndarray], device: str, config: BenchConfig
) -> tuple[list[float], list[float], cell_bench.Spread]:
    """:func:`paired_speedup` of the torch module (eager, no autograd) and the session on the same inputs."""
    run, synchronize = runtime.resident_call(session, feeds)
    with torch.no_grad():
        return paired_speedup(lambda: module(*inputs), lambda: (run(), synchronize()), device, config.warmup, config.repeats)


def _measure(graph: str, path: Path, model: SequenceModel | VectorModel, steps: int | None, config: BenchConfig, threads: int) -> dict[str, Any]:
    wrapper = onnx_export.graph_module(model, graph)
    result: dict[str, Any] = {
        "threads": threads, "onnxruntime": runtime.distribution(), "torch": torch.__version__, "providers": {},
        "lengths": _lengths(steps), "task_length": steps, "batch_sizes": list(config.batch_sizes),
        "method": "paired", "rounds": config.repeats, "unsteady_spread": UNSTEADY_SPREAD,
    }
    for provider in runtime.providers_here():
        device = "cuda" if provider == runtime.CUDA else "cpu"
        session = runtime.open_session(path, provider, threads, spinning=False)  # the sides alternate in one process
        names = [i.name for i in session.get_inputs()]
        on_device = wrapper.to(device)
        rows = []
        for length in result["lengths"]:
            for batch in config.batch_sizes:
                inputs = onnx_export.example_inputs(model, batch, length)
                feeds = {name: tensor.numpy() for name, tensor in zip(names, inputs)}
                device_inputs = [tensor.to(device) for tensor in inputs]
                eager, ort, speedup = _time_both(on_device, device_inputs, session, feeds, device, config)
                rows.append({
                    "length": length, "batch": batch,
                    "onnxruntime_p50_ms": 1e3 * statistics.median(ort), "onnxruntime_p99_ms": 1e3 * _percentile(ort, 99),
                    "torch_p50_ms": 1e3 * statistics.median(eager), "torch_p99_ms": 1e3 * _percentile(eager, 99),
                    "onnxruntime_sequences_per_s": batch / statistics.median(ort), "torch_sequences_per_s": batch / statistics.median(eager),
                    "speedup_vs_torch": speedup.median, "speedup_low": speedup.low, "speedup_high": speedup.high,
                    "speedup_unsteady": unsteady(speedup),
                })
        result["providers"][provider] = {"torch_device": device, "hardware": _hardware(device, threads), "rows": rows}
        wrapper.to("cpu")
    return result


def latency_series(latency: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The latency rows split into one series per runtime and length, each in batch order, keyed
    by a file name (``onnxruntime_CPU_T50``): DVC draws each file of a plot folder as its own line."""
    series: dict[str, list[dict[str, Any]]] = {}
    for row in latency:
        name = re.sub(r"[^A-Za-z0-9]+", "_", f"{row['runtime']} T{row['length']}").strip("_")
        series.setdefault(name, []).append(row)
    return {name: sorted(rows, key=lambda row: row["batch"]) for name, rows in series.items()}


def summary_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Headline figures: batch-1 latency and largest-batch throughput at the task's length."""
    metrics = {}
    for provider, measured in result["providers"].items():
        short = "cpu" if provider.startswith("CPU") else "cuda"
        rows = measured["rows"]
        at_length = [r for r in rows if r["length"] == result["task_length"]]
        first = next(r for r in at_length if r["batch"] == 1)
        last = max(at_length, key=lambda r: r["batch"])
        metrics.update({
            f"bench.{short}.batch1_p50_ms": first["onnxruntime_p50_ms"], f"bench.{short}.batch1_p99_ms": first["onnxruntime_p99_ms"],
            f"bench.{short}.max_batch_sequences_per_s": last["onnxruntime_sequences_per_s"],
        })
        for label, row in (("batch1", first), ("max_batch", last)):
            prefix = f"bench.{short}.{label}_speedup"
            metrics.update({
                f"{prefix}_vs_torch": row["speedup_vs_torch"], f"{prefix}_low": row["speedup_low"], f"{prefix}_high": row["speedup_high"],
                f"{prefix}_unsteady": float(row["speedup_unsteady"]),  # 1.0: do not quote it
            })
    return metrics


def markdown(title: str, result: dict[str, Any]) -> str:
    """The measurements as a markdown table per provider, each headed by the hardware it ran on."""
    lines = [
        (
            f"onnxruntime vs torch eager, {title}: {result['onnxruntime']}, torch {result['torch']}. Speedup: torch time / "
            f"onnxruntime time, the median (min–max) of {result['rounds']} paired rounds, the sides interleaved; "
            f"*unsteady*: the rounds' ratios span more than {result['unsteady_spread']:g}×, too wide to quote."
        ),
        "",
    ]
    for provider, measured in result["providers"].items():
        lines += [
            f"{provider} against torch on {measured['torch_device']}, measured on {measured['hardware']}:", "",
            "| length | batch | onnxruntime p50 ms | onnxruntime p99 ms | torch p50 ms | torch p99 ms | sequences/s | speedup vs torch |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {'-' if r['length'] is None else r['length']} | {r['batch']} | {r['onnxruntime_p50_ms']:.3f} | {r['onnxruntime_p99_ms']:.3f} "
            f"| {r['torch_p50_ms']:.3f} | {r['torch_p99_ms']:.3f} | {r['onnxruntime_sequences_per_s']:,.0f} | {speedup_text(r)} |"
            for r in measured["rows"]
        ]
        lines.append("")
    return "\n".join(lines)


def bench(config: Config, experiment: str) -> dict[str, float]:
    exp = config.experiment(experiment)
    model = ModelRecord.load(experiment, exp.params_hash()).build()  # torch eager as it trains: nn.LSTM's kernel where it can
    graph = model.graphs[0]  # the whole-sequence (or vector) graph
    path = files.onnx_dir(experiment) / f"{graph}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"exported model {path} does not exist: run `rnnzoo export {experiment}` first")
    steps = model.spec.steps  # the task's own length (a language model's bptt segment); None: no time axis
    if model.is_sequence and steps is None:
        raise ValueError(f"{files.model_path(experiment)} predates its task's length in the model file: run `rnnzoo train {experiment}` again")
    result = bench_model(graph, path, model, steps, config.bench)
    metrics = summary_metrics(result)
    report = files.reports_dir(experiment)
    table = markdown(f"{experiment} ({exp.cell}, {exp.task})", result)
    latency = [
        {"runtime": label, "batch": row["batch"], "length": row["length"], "p50_ms": row[f"{engine}_p50_ms"]}
        for provider, measured in result["providers"].items()
        for engine, label in (("onnxruntime", f"onnxruntime {provider.removesuffix('ExecutionProvider')}"), ("torch", f"torch {measured['torch_device']}"))
        for row in measured["rows"]
    ]
    with outputs.together() as staged:  # the figures, their table and plot appear together or not at all
        files.write_json({**metrics, "detail": result}, staged.file(report / "bench.json"))
        files.write_text(table, staged.file(report / "bench.md"))
        series = staged.folder(report / "bench_latency")
        for name, rows in latency_series(latency).items():
            files.write_json(rows, series / f"{name}.json")
        plot = plots.latency_vs_batch(latency, f"{experiment}: latency by batch", staged.folder(report / "bench_plots") / "latency_vs_batch.png")
    with tracking.stage_run("bench", exp) as mlflow:
        tracking.log_metrics(mlflow, metrics)
        mlflow.log_artifact(str(report / "bench_plots" / plot.name), artifact_path="plots")
    return metrics
