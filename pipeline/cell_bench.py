"""Speed of every cell against ``torch.nn.LSTM`` at equal width, as a training loop sees it.

Each cell is timed against the reference in the same process, the two sides **interleaved
block by block**: a round times ``block`` back-to-back calls of one side, then of the other
(which side goes first alternates), after warm-up calls, so caches, allocator and cuDNN plans
are as warm as in training and a noisy shared machine slows both sides alike. Each round gives
one paired ratio; rows report the median and the min–max of the ratios, and the median time
per step. Forward-only (inference, ``torch.no_grad``, eval mode) and forward+backward (a
training step without the optimizer) are timed separately. The reference row is
``torch.nn.LSTM`` against a second ``torch.nn.LSTM``: its spread is the noise floor.

``flatness`` times one model at two sequence lengths (50 and 400 steps) the same way: the
ratio of time per step says whether the backward pass grows faster than T. Both keep freed host
memory in the process as ``rnnzoo train`` does (``cells.loops.host_memory``): with glibc's
defaults the large buffers of T=400 are page-faulted back in every call, which grew
``torch.nn.LSTM``'s time per step too (1.13-1.26; the loops' 1.13-1.44).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnnzoo import cells
from rnnzoo.cells.loops.host_memory import keep_freed_memory
from rnnzoo.cells.loops.native import cpu_name

REFERENCE = "torch.nn.LSTM"
# The targets, as ratios to torch.nn.LSTM (rhn: per micro-layer, i.e. divided by depth).
TARGETS: dict[str, dict[str, float]] = {
    "cpu": {"janet": 0.75, "indrnn": 0.25, "phased_lstm": 1.2, "rhn": 1.2},
    "cuda": {"janet": 0.75, "indrnn": 0.3, "phased_lstm": 1.2, "rhn": 1.2},
}
FLATNESS_TARGET = 1.1
FLATNESS_STEPS = (50, 400)
RHN_DEPTH = 3  # the cell's default


@dataclass(frozen=True)
class Shape:
    """One benchmark shape: hidden width H, batch B, steps T, input features, dtype."""

    hidden_size: int
    batch_size: int
    steps: int
    input_size: int = 32
    dtype: str = "float32"

    def label(self) -> str:
        return f"H={self.hidden_size} B={self.batch_size} T={self.steps} I={self.input_size} {self.dtype}"


# The shapes of the issue: the development machine's CPU shape; the GPU grid.
SHAPES: dict[str, tuple[Shape, ...]] = {
    "cpu": (Shape(128, 32, 100),),
    "cuda": tuple(Shape(h, b, t) for h in (128, 256) for b in (32, 256) for t in (100, 1000)),
}
# FlashRNN's published benchmark shape (NX-AI/flashrnn: B=16, T=1024, H=768, bfloat16).
FLASHRNN = Shape(768, 16, 1024, input_size=768, dtype="bfloat16")
# unfolded_lstm has one untied layer a step: past this many steps it is too big to be a fair row.
UNFOLDED_MAX_STEPS = 100


@dataclass(frozen=True)
class Spread:
    """The median and min–max of paired ratios (or of times)."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def __str__(self) -> str:
        return f"{self.median:.3g} ({self.low:.3g}–{self.high:.3g})"


@dataclass(frozen=True)
class BenchRow:
    name: str
    shape: Shape
    parameters: int
    forward_ms_per_step: float
    forward_ratio: Spread
    training_ms_per_step: float
    training_ratio: Spread


@dataclass(frozen=True)
class FlatnessRow:
    name: str
    short_ms_per_step: float
    long_ms_per_step: float
    ratio: Spread  # time per step at the long length over the short one


def required_options(name: str, steps: int) -> dict[str, float]:
    """Options a cell cannot be built without, set from the sequence length."""
    return {"max_timescale": float(steps)} if name == "chrono_lstm" else {}


def names_for(shape: Shape) -> list[str]:
    """The rows benchmarked at ``shape``: every cell (unfolded_lstm only up to UNFOLDED_MAX_STEPS)
    and the LSTM on its own fused loop."""
    names = [n for n in cells.names() if n != "unfolded_lstm" or shape.steps <= UNFOLDED_MAX_STEPS]
    return [*names, OWN_LSTM_LOOP]


# A row name with this suffix times the cell's reference Python loop (fused=False).
REFERENCE_LOOP = " (fused=False)"
# The LSTM on rnnzoo's own fused loop (what torch.compile runs) rather than torch.nn.LSTM's kernel:
# the baseline of the Phased LSTM, whose loop is this one with the time gate added.
OWN_LSTM_LOOP = "lstm (own fused loop)"


class _OwnLoopLayer(cells.RecurrentLayer):
    runs_on_torch_lstm = False  # type: ignore[assignment]  # a class attribute shadows the property


def build(name: str, shape: Shape, device: torch.device) -> nn.Module:
    """The model timed for ``name`` at ``shape``, on ``device`` in the shape's dtype."""
    model: nn.Module
    if name == OWN_LSTM_LOOP:
        model = cells.make("lstm", shape.input_size, shape.hidden_size)
        model.__class__ = _OwnLoopLayer
    elif name.endswith(REFERENCE_LOOP):
        cell = name.removesuffix(REFERENCE_LOOP)
        model = cells.make(cell, shape.input_size, shape.hidden_size, fused=False, **required_options(cell, shape.steps))
    elif name == REFERENCE:
        model = nn.LSTM(shape.input_size, shape.hidden_size, batch_first=True)
    elif name == "unfolded_lstm":
        # One unfolded layer per time step, so "per step" compares like with like.
        model = cells.make(name, shape.input_size, shape.hidden_size, depth=shape.steps)
    else:
        model = cells.make(name, shape.input_size, shape.hidden_size, **required_options(name, shape.steps))
    return model.to(device=device, dtype=getattr(torch, shape.dtype))


def _call(name: str, model: nn.Module, x: Tensor, training: bool) -> None:
    inputs = x[:, 0] if name == "unfolded_lstm" else x
    if training:
        model.train()
        model.zero_grad(set_to_none=True)
        outputs, _ = model(inputs)
        outputs.float().sum().backward()
    else:
        model.eval()
        with torch.no_grad():
            model(inputs)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired(run_a: Callable[[], None], run_b: Callable[[], None], device: torch.device, rounds: int, block: int) -> tuple[list[float], list[float]]:
    """Seconds per call of ``run_a`` and ``run_b``, one figure a round, interleaved block by block."""
    for run in (run_a, run_b, run_a, run_b):  # warm-up: allocator, kernels, cuDNN plans, the C++ build
        run()
    seconds: tuple[list[float], list[float]] = ([], [])
    for round_index in range(rounds):
        order = (0, 1) if round_index % 2 == 0 else (1, 0)  # neither side always goes first
        for side in order:
            run = (run_a, run_b)[side]
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(block):
                run()
            _synchronize(device)
            seconds[side].append((time.perf_counter() - start) / block)
    return seconds


def measure(device: str, shape: Shape, names: Sequence[str] | None = None, rounds: int = 10, block: int = 3) -> list[BenchRow]:
    """One row per cell (and the reference against itself) at ``shape`` on ``device``."""
    keep_freed_memory()  # as `rnnzoo train` runs
    torch_device = torch.device(device)
    torch.manual_seed(0)
    x = torch.randn(shape.batch_size, shape.steps, shape.input_size, device=torch_device, dtype=getattr(torch, shape.dtype))
    reference = build(REFERENCE, shape, torch_device)
    rows = []
    for name in [REFERENCE, *(names if names is not None else names_for(shape))]:
        model = build(name, shape, torch_device)  # for the reference: a second copy, its noise floor
        per_mode = {}
        for training in (False, True):
            cell_s, reference_s = paired(
                functools.partial(_call, name, model, x, training),
                functools.partial(_call, REFERENCE, reference, x, training),
                torch_device,
                rounds,
                block,
            )
            ratios = [c / r for c, r in zip(cell_s, reference_s)]
            per_mode[training] = (1e3 * statistics.median(cell_s) / shape.steps, Spread.of(ratios))
        rows.append(
            BenchRow(
                name=name,
                shape=shape,
                parameters=sum(p.numel() for p in model.parameters()),
                forward_ms_per_step=per_mode[False][0],
                forward_ratio=per_mode[False][1],
                training_ms_per_step=per_mode[True][0],
                training_ratio=per_mode[True][1],
            )
        )
    return rows


def flatness(device: str, shape: Shape, names: Sequence[str] | None = None, rounds: int = 6, block: int = 2) -> list[FlatnessRow]:
    """Time per training step at FLATNESS_STEPS[1] over FLATNESS_STEPS[0], the same model, interleaved.

    Rows for the fused loops and, for the cells that have one, for the reference Python loop too
    (``fused=False``, the path a device without fused kernels takes): its backward once grew with T².
    """
    keep_freed_memory()  # as `rnnzoo train` runs: freed buffers page-faulted back in grew with T
    torch_device = torch.device(device)
    short, long = FLATNESS_STEPS
    dtype = getattr(torch, shape.dtype)
    x_short = torch.randn(shape.batch_size, short, shape.input_size, device=torch_device, dtype=dtype)
    x_long = torch.randn(shape.batch_size, long, shape.input_size, device=torch_device, dtype=dtype)
    rows = []
    sequence_cells = [n for n in (names if names is not None else cells.names()) if cells.is_sequence_model(n)]
    # The cells whose fused path is rnnzoo's own loop (the LSTMs' is torch.nn.LSTM's kernel).
    reference_loops = [
        n + REFERENCE_LOOP for n in sequence_cells if not getattr(cells.SEQUENCE_CELLS[n], "runs_on_torch_lstm", False)
    ]
    for name in [REFERENCE, *sequence_cells, *reference_loops]:
        model = build(name, dataclasses.replace(shape, steps=long), torch_device)
        short_s, long_s = paired(
            functools.partial(_call, name, model, x_short, True),
            functools.partial(_call, name, model, x_long, True),
            torch_device,
            rounds,
            block,
        )
        ratios = [(b / long) / (a / short) for a, b in zip(short_s, long_s)]
        rows.append(FlatnessRow(name, 1e3 * statistics.median(short_s) / short, 1e3 * statistics.median(long_s) / long, Spread.of(ratios)))
    return rows


def device_name(device: str) -> str:
    """What the figures were measured on, in words."""
    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"CPU ({cpu_name()}, {torch.get_num_threads()} threads), torch {torch.__version__}"


def _target(device: str, row: BenchRow) -> tuple[str, str]:
    """The target column and whether the row meets it (rhn is judged per micro-layer)."""
    target = TARGETS[device].get(row.name)
    if target is None:
        return "", ""
    ratio = row.training_ratio.median / (RHN_DEPTH if row.name == "rhn" else 1)
    label = f"≤ {target} per micro-layer ({ratio:.2f})" if row.name == "rhn" else f"≤ {target}"
    return label, "yes" if ratio <= target else "no"


def markdown(
    device: str, rows: Sequence[BenchRow], flat_rows: Sequence[FlatnessRow], rounds: int, block: int, memory_kept: bool
) -> str:
    """The tables as markdown, headed by the device and the method (``memory_kept``: what
    ``keep_freed_memory`` returned in the measuring process)."""
    lines = [
        f"# Cell speed on {device_name(device)}",
        "",
        (
            f"Ratios to {REFERENCE} at the same shape (H width, B batch, T steps, I inputs); each ratio is the median (min–max) of {rounds} paired rounds of "
            f"{block} back-to-back calls a side, the two sides interleaved. Forward: eval mode under no_grad. Training: "
            "forward + backward. ms/step: the cell's median time per time step. "
            + ("Freed host memory is kept in the process, as `rnnzoo train` keeps it (rnnzoo.cells.loops.host_memory)."
               if memory_kept else "Freed host memory is not kept: this C library's malloc has its own policy, or glibc refused the thresholds.")
        ),
        "",
        "| shape | cell | forward ms/step | forward ratio | training ms/step | training ratio | target (training) | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        target, met = _target(device, row)
        lines.append(
            f"| {row.shape.label()} | {row.name} | {row.forward_ms_per_step:.4g} | {row.forward_ratio} | "
            f"{row.training_ms_per_step:.4g} | {row.training_ratio} | {target} | {met} |"
        )
    if flat_rows:
        short, long = FLATNESS_STEPS
        # The reference's own growth is the machine's (caches, memory), not the loop's: shown beside.
        reference = next((r.ratio.median for r in flat_rows if r.name == REFERENCE), None)
        lines += [
            "",
            (
                f"Training time per step at T={long} over T={short} (same model, interleaved; target ≤ {FLATNESS_TARGET}). "
                f"The last column divides by {REFERENCE}'s own ratio, the growth this machine imposes on any kernel:"
            ),
            "",
            f"| cell | ms/step at T={short} | ms/step at T={long} | ratio | met | over {REFERENCE}'s growth |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r.name} | {r.short_ms_per_step:.4g} | {r.long_ms_per_step:.4g} | {r.ratio} | "
            f"{'yes' if r.ratio.median <= FLATNESS_TARGET else 'no'} | {f'{r.ratio.median / reference:.3g}' if reference else ''} |"
            for r in flat_rows
        ]
    return "\n".join(lines) + "\n"
