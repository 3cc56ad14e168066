"""JANET against an LSTM on sequential and permuted MNIST (seed 000): the two claims' common setting.

At ``cpu`` scale the 10,000 MNIST test images are split 8,000 train / 1,000 valid / 1,000 test
with a fixed seed and shrunk to 14 x 14 (196 pixel steps); ``paper`` reads the 784 pixels of the
standard 60,000 / 10,000 files. The model kept is the best on valid, as in the paper.
"""

from __future__ import annotations

from typing import Any

from rnnzoo.pipeline.claims.base import CPU_MNIST, Arm, Better, Claim, Scale

PAPER = "van der Westhuizen & Lasenby, 'The unreasonable effectiveness of the forget gate', arXiv:1804.04849, 2018"


def _arms(hidden: int, layers: int, task: dict[str, Any], side: int) -> tuple[Arm, ...]:
    return (
        # Chrono initialisation with T_max the sequence length (side x side pixels), as the paper does for JANET.
        Arm("janet", "janet", "seq_mnist", hidden, {"num_layers": layers, "max_timescale": side * side}, task),
        Arm("lstm", "lstm", "seq_mnist", hidden, {"num_layers": layers}, task),
    )


def mnist_claim(name: str, permuted: bool, paper_layers: int, figure: str, reference: float) -> Claim:
    which = "permuted" if permuted else "sequential"
    return Claim(
        name=name,
        seed_repository="seed 000 (JANET, Keras)",
        paper=PAPER,
        figure=figure,
        statement=f"JANET's test accuracy on {which} MNIST beats an LSTM's of the same size",
        metric="test.accuracy",
        higher_is_better=True,
        rule=Better("janet", "lstm", higher_is_better=True),
        scales={
            "smoke": Scale(
                _arms(8, 1, {"source": "digits", "permuted": permuted, "image_size": 4, "limit": 200}, 4),
                (0, 1),
                {"steps": 20, "batch_size": 32, "lr": 0.01, "eval_every": 10},
                "seconds-long check of the machinery on 4 x 4 digits, not a result",
            ),
            "cpu": Scale(
                _arms(64, 1, {**CPU_MNIST, "permuted": permuted, "image_size": 14}, 14),
                (0, 1, 2),
                {"steps": 4000, "batch_size": 100, "lr": 0.001, "eval_every": 250},
                f"MNIST's 10,000 test images split 8,000 / 1,000 / 1,000; 14 x 14 (196 steps, not 784); "
                f"1 x 64 units (paper {paper_layers} x 128); 4,000 steps of batch 100 (50 epochs)",
                data="mnist",
            ),
            "paper": Scale(
                _arms(128, paper_layers, {"source": "mnist", "permuted": permuted, "valid_fraction": 0.0833}, 28),
                (0, 1, 2),
                {"steps": 30_000, "batch_size": 200, "lr": 0.001, "eval_every": 1000},
                f"the standard files, 784 steps, {paper_layers} x 128 units, batch 200, Adam 1e-3, 100 epochs",
                data="mnist_standard",
            ),
        },
        reference=reference,
        curve="accuracy",
    )
