"""Training-step speed of every cell against ``torch.nn.LSTM`` at equal width.

Times forward + backward over a sequence and reports time per step and the ratio to
``torch.nn.LSTM`` measured in the same process, with the runs of all models interleaved so
that a noisy, shared machine slows them alike.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import cells

REFERENCE = "torch.nn.LSTM"


@dataclass(frozen=True)
class BenchConfig:
    input_size: int = 32
    hidden_size: int = 128
    batch_size: int = 32
    steps: int = 50
    repeats: int = 10
    device: str = "cpu"


@dataclass(frozen=True)
class BenchRow:
    name: str
    parameters: int
    ms_per_step: float
    ratio_to_lstm: float


def required_options(name: str, steps: int) -> dict[str, float]:
    """Options a cell cannot be built without, set from the sequence length."""
    return {"max_timescale": float(steps)} if name == "chrono_lstm" else {}


def build(name: str, config: BenchConfig) -> nn.Module:
    """The model timed for ``name``."""
    if name == REFERENCE:
        return nn.LSTM(config.input_size, config.hidden_size, batch_first=True)
    if name == "unfolded_lstm":
        # One unfolded layer per time step, so "per step" compares like with like.
        return cells.make(name, config.input_size, config.hidden_size, depth=config.steps)
    return cells.make(name, config.input_size, config.hidden_size, **required_options(name, config.steps))


def _training_step(name: str, model: nn.Module, x: Tensor) -> None:
    model.zero_grad(set_to_none=True)
    outputs, _ = model(x[:, 0] if name == "unfolded_lstm" else x)
    outputs.sum().backward()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(config: BenchConfig, names: list[str] | None = None) -> list[BenchRow]:
    """Median time per step of each cell and its ratio to ``torch.nn.LSTM``."""
    device = torch.device(config.device)
    names = [REFERENCE, *(names or cells.names())]
    models = {name: build(name, config).to(device).train() for name in names}
    x = torch.randn(config.batch_size, config.steps, config.input_size, device=device)
    for name, model in models.items():  # warm-up: allocator, kernels, cuDNN plans
        _training_step(name, model, x)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(config.repeats):
        # Rotate the order so no model always runs first (cold caches) or last.
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            model = models[name]
            _synchronize(device)
            start = time.perf_counter()
            _training_step(name, model, x)
            _synchronize(device)
            times[name].append((time.perf_counter() - start) / config.steps)
    reference = statistics.median(times[REFERENCE])
    return [
        BenchRow(
            name=name,
            parameters=sum(p.numel() for p in models[name].parameters()),
            ms_per_step=1e3 * statistics.median(times[name]),
            ratio_to_lstm=statistics.median(times[name]) / reference,
        )
        for name in names
    ]


def markdown(config: BenchConfig, rows: list[BenchRow]) -> str:
    """The ratio table as markdown, headed by the shape and the device it was measured on."""
    device = torch.cuda.get_device_name() if config.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [
        f"Training step (forward + backward) per time step, input {config.input_size}, hidden {config.hidden_size}, "
        f"batch {config.batch_size} x {config.steps} steps, median of {config.repeats}; {device}, torch {torch.__version__}.",
        "",
        f"| cell | parameters | ms / step | ratio to {REFERENCE} |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {r.name} | {r.parameters:,} | {r.ms_per_step:.3f} | {r.ratio_to_lstm:.3g} |" for r in rows]
    return "\n".join(lines) + "\n"
