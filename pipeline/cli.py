"""The ``rnnzoo`` command line."""

from __future__ import annotations

import torch
import typer
from rich.console import Console
from rich.table import Table

import cells
from pipeline import cell_bench

app = typer.Typer(help="rnnzoo: recurrent cells that papers proposed as better LSTMs.", no_args_is_help=True)
console = Console()


def _summary(name: str) -> str:
    model_type = cells.SEQUENCE_CELLS.get(name) or cells.VECTOR_MODELS[name]
    module_doc = __import__(model_type.__module__, fromlist=["__doc__"]).__doc__ or ""
    return module_doc.strip().splitlines()[0]


@app.callback()
def main() -> None:
    """rnnzoo: recurrent cells that papers proposed as better LSTMs."""


@app.command("cells")
def list_cells(
    input_size: int = typer.Option(32, min=1, help="Input features per step."),
    hidden_size: int = typer.Option(128, min=1, help="Units per layer (the width)."),
    bench: bool = typer.Option(False, "--bench", help="Time forward+backward per step against torch.nn.LSTM."),
    batch_size: int = typer.Option(32, min=1, help="Benchmark batch size."),
    steps: int = typer.Option(50, min=3, help="Benchmark sequence length (and chrono_lstm's max_timescale)."),
    repeats: int = typer.Option(10, min=1, help="Timed repetitions per model; the median is reported."),
    device: str = typer.Option("auto", help="auto, cpu or cuda (auto picks cuda when present)."),
) -> None:
    """List the registered cells with their parameter counts at a given width."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"device must be auto, cpu or cuda, got {device!r}", param_hint="--device")
    if device == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("device 'cuda' asked for, but torch sees no CUDA GPU", param_hint="--device")
    config = cell_bench.BenchConfig(input_size, hidden_size, batch_size, steps, repeats, device)
    table = Table(title=f"rnnzoo cells at input_size={input_size}, hidden_size={hidden_size}")
    table.add_column("cell")
    table.add_column("parameters", justify="right")
    if bench:
        with console.status("timing forward+backward of every cell..."):
            rows = cell_bench.run(config)
        table.title += f", batch {batch_size} x {steps} steps on {device}"
        table.add_column("ms / step", justify="right")
        table.add_column(f"ratio to {cell_bench.REFERENCE}", justify="right")
        for row in rows:
            table.add_row(row.name, f"{row.parameters:,}", f"{row.ms_per_step:.3f}", f"{row.ratio_to_lstm:.2f}")
    else:
        table.add_column("paper")
        for name in cells.names():
            model = cells.make(name, input_size, hidden_size, **cell_bench.required_options(name, steps))
            table.add_row(name, f"{sum(p.numel() for p in model.parameters()):,}", _summary(name))
    console.print(table)
