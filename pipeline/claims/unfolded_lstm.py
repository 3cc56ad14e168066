"""Claim 4 (seed 001): an LSTM unfolded over depth passes gradients to its bottom layers, where an MLP
of the same depth and width lets them vanish."""

from __future__ import annotations

import math
import statistics

from rnnzoo.pipeline.claims.base import CPU_MNIST, Arm, Better, Claim, Run, Scale


def gradient_reach(run: Run) -> float:
    """Median over training of log10(norm of the gradient of layer 1 / that of layer L): 0 when the bottom layer gets
    as much gradient as the top one, very negative when gradients vanish on the way down."""
    ratios = [
        math.log10(norms[0] / norms[-1])
        for record in run.history
        if len(norms := record.get("layer_grad_norms") or []) > 1 and norms[0] > 0 and norms[-1] > 0
    ]
    return statistics.median(ratios) if ratios else math.nan


def _arms(depths: tuple[int, ...], width: int, task: dict, cnn: bool = True) -> tuple[Arm, ...]:
    arms = []
    for depth in depths:  # the deepest pair is "unfolded" and "mlp", which the rule compares
        suffix = f" L{depth}" if depth < max(depths) else ""
        arms.append(Arm(f"unfolded{suffix}", "unfolded_lstm", "mnist_vector", width, {"depth": depth, "batch_norm": True}, task))
        arms.append(Arm(f"mlp{suffix}", "mlp", "mnist_vector", width, {"num_layers": depth, "batch_norm": True}, task))
    if cnn:  # the seed's "compare with other models": a small CNN of the same task
        arms.append(Arm("cnn", "cnn", "mnist_vector", width, {"channels": 16, "num_layers": 2}, task))
    return tuple(arms)


CLAIM = Claim(
    name="unfolded_lstm",
    seed_repository="seed 001 (the unfolded LSTM as a deep network, untied weights)",
    paper="the seed repository's hypothesis (no paper figure): an LSTM unrolled over depth is a deep network whose gates keep gradients alive",
    figure="none: the seed's grid L in {10, 20, 30} x state {100, 200, 300} x {tied, untied} x {dropout, none}, batch norm, orthogonal init",
    statement="at the scale's deepest depth, the unfolded LSTM's bottom layer gets a larger share of the top layer's gradient than an MLP's of the same depth and width",
    metric="log10 of the gradient norm of layer 1 over layer L (median over training)",
    higher_is_better=True,
    measure=gradient_reach,
    rule=Better("unfolded", "mlp", higher_is_better=True),
    curve="accuracy",
    scales={
        "smoke": Scale(
            _arms((3,), 8, {"source": "digits", "limit": 200}, cnn=True),
            (0, 1),
            {"steps": 20, "batch_size": 32, "lr": 0.01, "eval_every": 10},
            "seconds-long check of the machinery, not a result",
        ),
        "cpu": Scale(
            _arms((10, 20), 100, CPU_MNIST),
            (0, 1, 2),
            {"steps": 1000, "batch_size": 100, "lr": 0.001, "eval_every": 100},
            "L in {10, 20}, state 100, untied, no dropout, batch norm, default (not orthogonal) init; MNIST's 10,000 test "
            "images split 8,000 / 1,000 / 1,000; 1,000 steps of batch 100",
            data="mnist",
        ),
        "paper": Scale(
            _arms((10, 20, 30), 200, {"source": "mnist", "valid_fraction": 0.0833}),
            (0, 1, 2),
            {"steps": 30_000, "batch_size": 100, "lr": 0.001, "eval_every": 1000},
            "L in {10, 20, 30}, state 200, untied, batch norm; the standard files (the grid's other axes: run them by hand)",
            data="mnist_standard",
        ),
    },
)
