"""The closing report of a pipeline run: final metrics beside baselines, plot paths, the UI command."""

from __future__ import annotations

import json

from rich.table import Table

from pipeline import files, tracking
from pipeline.config import Config


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
        metrics = json.loads(path.read_text())
        optional = [metrics.get(key) for key in ("valid.accuracy", "valid.perplexity")]
        result.add_row(
            name, exp.cell, exp.task, f"{metrics['valid.loss']:.4g}", f"{metrics['baseline_loss']:.4g}",
            f"{metrics['valid.loss_over_baseline']:.3f}", *("" if value is None else f"{value:.3f}" for value in optional),
        )
    return result


def footer(names: list[str]) -> list[str]:
    lines = ["plots:"]
    for name in names:
        folder = files.reports_dir(name) / "plots"
        lines += [f"  {path}" for path in sorted(folder.glob("*.png"))]
    lines.append(f"open the MLflow UI on these runs:  {tracking.ui_command()}")
    return lines
