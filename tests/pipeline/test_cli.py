"""The rnnzoo CLI: listing cells and the speed baseline."""

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rnnzoo import cells
from rnnzoo.pipeline import cell_bench
from rnnzoo.pipeline.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def test_cells_lists_every_cell_with_its_parameter_count() -> None:
    result = runner.invoke(app, ["cells", "--hidden-size", "16", "--input-size", "3"])
    assert result.exit_code == 0, result.output
    for name in cells.names():
        options = cell_bench.required_options(name, 50)
        count = sum(p.numel() for p in cells.make(name, 3, 16, **options).parameters())
        assert re.search(rf"{name}\s*│\s*{count:,}\s", result.output), (name, count, result.output)


def test_bench_cells_at_one_shape_of_the_users_prints_paired_ratios_for_every_cell(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["bench", "cells", "--hidden-size", "8", "--input-size", "2", "--batch-size", "2", "--steps", "4"]
    result = runner.invoke(app, [*args, "--rounds", "2", "--block", "1", "--device", "cpu", "--no-flatness"])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "reports" / "bench_cells_cpu.md").read_text()
    # | shape | cell | forward ms/step | forward ratio median (min–max) | training ms/step | training ratio ...
    rows = re.findall(
        r"^\| (H=\S+ B=\S+ T=\S+ I=\S+) \S+ \| (\S+) \|[^|]+\| ([0-9.e+-]+) \([0-9.e+-]+–[0-9.e+-]+\)", table, re.MULTILINE
    )
    assert {shape for shape, _, _ in rows} == {"H=8 B=2 T=4 I=2"}, table
    assert {cell for _, cell, _ in rows} == {cell_bench.REFERENCE, *cells.names()}, table
    assert all(float(ratio) > 0 for _, _, ratio in rows)


def test_cells_has_no_second_benchmark() -> None:
    result = runner.invoke(app, ["cells", "--bench"])
    assert result.exit_code == 2 and "No such option" in result.output


def test_paired_timing_interleaves_blocks_and_alternates_which_side_goes_first() -> None:
    calls: list[str] = []
    seconds_a, seconds_b = cell_bench.paired(
        lambda: calls.append("a"), lambda: calls.append("b"), torch.device("cpu"), rounds=4, block=2
    )
    warm_up, timed = calls[:4], calls[4:]
    assert warm_up == ["a", "b", "a", "b"]
    assert "".join(timed) == "aabb" + "bbaa" + "aabb" + "bbaa"
    assert len(seconds_a) == len(seconds_b) == 4


def _row(name: str, training_ratio: float) -> cell_bench.BenchRow:
    spread = cell_bench.Spread(training_ratio, training_ratio, training_ratio)
    return cell_bench.BenchRow(name, cell_bench.Shape(8, 2, 4), 10, 0.1, spread, 0.2, spread)


def test_bench_table_judges_each_target_and_rhn_per_micro_layer() -> None:
    rows = [_row("janet", 0.7), _row("indrnn", 0.3), _row("rhn", 3.3), _row("phased_lstm", 1.1)]
    table = cell_bench.markdown("cpu", rows, [], rounds=2, block=1, memory_kept=True)
    met = dict(re.findall(r"\| (janet|indrnn|rhn|phased_lstm) \|.*\| (yes|no) \|", table))
    # janet 0.7 <= 0.75; indrnn 0.3 > 0.25; rhn 3.3 / depth 3 = 1.1 <= 1.2; phased 1.1 <= 1.2.
    assert met == {"janet": "yes", "indrnn": "no", "rhn": "yes", "phased_lstm": "yes"}, table


@pytest.mark.parametrize("kept", [True, False])
def test_bench_table_says_whether_freed_memory_was_kept(kept: bool) -> None:
    table = cell_bench.markdown("cpu", [_row("janet", 0.7)], [], rounds=2, block=1, memory_kept=kept)
    assert ("Freed host memory is kept in the process" in table) is kept
    assert ("Freed host memory is not kept" in table) is not kept


def test_bench_cells_rejects_an_unknown_device() -> None:
    result = runner.invoke(app, ["bench", "cells", "--device", "tpu"])
    assert result.exit_code != 0
    assert "tpu" in result.output


def test_help_lists_the_cells_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "cells" in result.output


def test_bench_cells_saves_a_markdown_table_per_device(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cell_bench, "SHAPES", {"cpu": (cell_bench.Shape(4, 2, 3, input_size=2),)})
    monkeypatch.setattr(cell_bench, "FLATNESS_STEPS", (3, 6))
    events: list[str] = []
    monkeypatch.setattr(cell_bench, "keep_freed_memory", lambda: events.append("keep") or True)
    paired = cell_bench.paired
    monkeypatch.setattr(cell_bench, "paired", lambda *args, **kwargs: events.append("time") or paired(*args, **kwargs))
    result = runner.invoke(app, ["bench", "cells", "--device", "cpu", "--rounds", "2", "--block", "1"])
    assert result.exit_code == 0, result.output
    assert events[0] == "keep" and "time" in events  # timed as `rnnzoo train` runs, freed memory kept
    table = (tmp_path / "reports" / "bench_cells_cpu.md").read_text()
    assert "Freed host memory is kept in the process" in table
    assert "CPU" in table and f"| {cell_bench.REFERENCE} |" in table
    assert all(f"| {name} |" in table for name in cells.names())
    assert "T=6 over T=3" in table


def test_bench_cells_flashrnn_shape_adds_janet_and_the_lstms_at_that_shape_in_bfloat16(tmp_path, monkeypatch) -> None:
    """``--shape flashrnn``: FlashRNN's comparison (bfloat16; here at a tiny stand-in for its
    B=16, T=1024, H=768) after the device's own shapes: the reference, lstm and janet only."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cell_bench, "SHAPES", {"cpu": (cell_bench.Shape(4, 2, 3, input_size=2),)})
    tiny = cell_bench.Shape(8, 2, 5, input_size=8, dtype="bfloat16")
    monkeypatch.setattr(cell_bench, "FLASHRNN", tiny)
    result = runner.invoke(app, ["bench", "cells", "--device", "cpu", "--shape", "flashrnn", "--no-flatness", "--rounds", "2", "--block", "1"])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "reports" / "bench_cells_cpu.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(f"| {tiny.label()} |")]
    assert sorted(line.split(" | ")[1] for line in rows) == sorted([cell_bench.REFERENCE, "lstm", "janet"]), table


# The answers that need no model: each must come without importing torch (seconds) or the cells.
NO_TORCH_ARGS = [
    ["--help"],
    ["--version"],
    ["train", "--help"],
    ["serve", "--help"],
    ["reproduce", "--help"],
    ["bench", "--help"],
]


@pytest.mark.parametrize("args", NO_TORCH_ARGS, ids=" ".join)
def test_help_and_version_answer_without_importing_torch(args: list[str]) -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom rnnzoo.pipeline.cli import app\n"
        f"result = CliRunner().invoke(app, {args!r})\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(name for name in ('torch', 'rnnzoo.cells', 'mlflow') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_version_is_the_installed_distributions() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"rnnzoo {importlib.metadata.version('rnnzoo')}"
