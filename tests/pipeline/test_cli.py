"""The rnnzoo CLI: listing cells and the speed baseline."""

import re

from typer.testing import CliRunner

import cells
from pipeline import cell_bench
from pipeline.cli import app

runner = CliRunner()


def test_cells_lists_every_cell_with_its_parameter_count() -> None:
    result = runner.invoke(app, ["cells", "--hidden-size", "16", "--input-size", "3"])
    assert result.exit_code == 0, result.output
    for name in cells.names():
        options = cell_bench.required_options(name, 50)
        count = sum(p.numel() for p in cells.make(name, 3, 16, **options).parameters())
        assert re.search(rf"{name}\s*│\s*{count:,}\s", result.output), (name, count, result.output)


def test_cells_bench_prints_a_ratio_for_every_cell() -> None:
    args = ["cells", "--bench", "--hidden-size", "8", "--input-size", "2", "--batch-size", "2", "--steps", "4", "--repeats", "1", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    ratios = dict(re.findall(r"│ (\S+)\s*│[^│]+│[^│]+│\s*([0-9.]+) │", result.output))
    assert set(ratios) == {cell_bench.REFERENCE, *cells.names()}
    assert float(ratios[cell_bench.REFERENCE]) == 1.0
    assert all(float(ratio) > 0 for ratio in ratios.values())


def test_cells_rejects_an_unknown_device() -> None:
    result = runner.invoke(app, ["cells", "--bench", "--device", "tpu"])
    assert result.exit_code != 0
    assert "tpu" in result.output


def test_help_lists_the_cells_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "cells" in result.output


def test_bench_cells_saves_a_markdown_table_per_device(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["bench", "cells", "--hidden-size", "4", "--steps", "3", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "reports" / "bench_cells_cpu.md").read_text()
    assert "CPU" in table and f"| {cell_bench.REFERENCE} |" in table
    assert all(f"| {name} |" in table for name in cells.names())
