"""The PNG plots of the evaluate stage (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend
import numpy as np

from rnnzoo.pipeline import files


def save_figure(figure: Any, path: Path) -> Path:
    """Lay out, write as PNG (temp file, then rename) and close ``figure``."""
    figure.tight_layout()
    files.atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)
    return path


def learning_curve(history: list[dict[str, Any]], baseline_loss: float, title: str, path: Path, valid: Sequence[dict[str, Any]] = ()) -> Path:
    """Training loss by step, the valid loss where ``valid`` holds evaluations, and the baseline."""
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([r["step"] for r in history], [r["loss"] for r in history], label="train loss")
    if valid:
        axis.plot([r["step"] for r in valid], [r["loss"] for r in valid], marker=".", label="valid loss")
    axis.axhline(baseline_loss, color="grey", linestyle="--", label=f"baseline {baseline_loss:.3g}")
    axis.set(xlabel="step", ylabel="loss", title=title, yscale="log")
    axis.legend()
    return save_figure(figure, path)


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, title: str, path: Path) -> Path:
    from sklearn.metrics import ConfusionMatrixDisplay  # here: importing scikit-learn takes 1.4 s, and only this plot needs it

    figure, axis = plt.subplots(figsize=(5, 5))
    ConfusionMatrixDisplay.from_predictions(targets, predictions, ax=axis, colorbar=False)
    axis.set_title(title)
    return save_figure(figure, path)


def layer_gradient_norms(history: list[dict[str, Any]], title: str, path: Path) -> Path:
    """One curve per unfolded layer: does the gradient reach the first layers?"""
    steps = [r["step"] for r in history]
    norms = np.array([r["layer_grad_norms"] for r in history])  # (records, layers)
    figure, axis = plt.subplots(figsize=(6, 4))
    colours = plt.cm.viridis(np.linspace(0, 1, norms.shape[1]))
    for layer, colour in enumerate(colours):
        axis.plot(steps, norms[:, layer], color=colour, label=f"layer {layer + 1}")
    axis.set(xlabel="step", ylabel="gradient norm", title=title, yscale="log")
    axis.legend(fontsize="small", ncol=2)
    return save_figure(figure, path)


def first_layer_filters(weight: np.ndarray, title: str, path: Path, count: int = 16) -> Path:
    """Input weights of the first ``count`` units of the first layer, as square images."""
    side = round(weight.shape[1] ** 0.5)
    count = min(count, weight.shape[0])
    columns = int(np.ceil(count**0.5))
    rows = int(np.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.6 * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < count and side * side == weight.shape[1]:
            axis.imshow(weight[index].reshape(side, side), cmap="RdBu")
    figure.suptitle(title)
    return save_figure(figure, path)


def latency_vs_batch(rows: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Median latency against batch size, one line per runtime and sequence length."""
    figure, axis = plt.subplots(figsize=(6, 4))
    keys = sorted({(r["runtime"], r["length"]) for r in rows}, key=lambda key: (key[0], key[1] or 0))
    for runtime, length in keys:
        points = sorted((r["batch"], r["p50_ms"]) for r in rows if r["runtime"] == runtime and r["length"] == length)
        label = runtime if length is None else f"{runtime}, T={length}"
        axis.plot(*zip(*points), marker="o", label=label)
    axis.set(xlabel="batch size", ylabel="p50 latency (ms)", title=title, xscale="log", yscale="log")
    axis.legend(fontsize="x-small")
    return save_figure(figure, path)
