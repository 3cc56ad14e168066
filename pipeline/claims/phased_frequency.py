"""Phased LSTM on frequency discrimination (seed 002): the two claims' common setting.

The baseline is what the paper gave it: an LSTM that receives each sample's timestamp as an input
feature (the task's ``time_feature``), beside the Phased LSTM whose time gate reads it.
"""

from __future__ import annotations

from rnnzoo.pipeline.claims.base import Arm, Better, Claim, Scale

PAPER = "Neil, Pfeiffer & Liu, 'Phased LSTM: accelerating recurrent network training for long or event-based sequences', NIPS 2016"


def _arms(sampling: str, duration: float, hidden: int, sizes: dict) -> tuple[Arm, ...]:
    task = {"sampling": sampling, "duration": duration, **sizes}
    return (
        Arm("phased_lstm", "phased_lstm", "frequency", hidden, {}, task),
        Arm("lstm + time", "lstm", "frequency", hidden, {}, {**task, "time_feature": True}),
    )


def frequency_claim(name: str, sampling: str, cpu_duration: float, figure: str, reference: float) -> Claim:
    steps = {"async": cpu_duration, "high_res": 10 * cpu_duration}[sampling]
    return Claim(
        name=name,
        seed_repository="seed 002 (Phased LSTM)",
        paper=PAPER,
        figure=figure,
        statement=f"under {sampling} sampling, the Phased LSTM classifies the frequency band more accurately than an LSTM given the timestamps",
        metric="test.accuracy",
        higher_is_better=True,
        rule=Better("phased_lstm", "lstm + time", higher_is_better=True),
        scales={
            "smoke": Scale(
                _arms(sampling, 4.0, 8, {"train_size": 64, "valid_size": 32, "test_size": 32}),
                (0, 1),
                {"steps": 20, "batch_size": 16, "lr": 0.01, "eval_every": 10},
                "seconds-long check of the machinery, not a result",
            ),
            "cpu": Scale(
                _arms(sampling, cpu_duration, 64, {"train_size": 5_000, "valid_size": 500, "test_size": 500}),
                (0, 1, 2),
                {"steps": 1500, "batch_size": 32, "lr": 0.001, "eval_every": 150},
                f"{cpu_duration:g} ms of signal ({steps:g} steps; the task's default is 50 ms); 64 units; 1,500 steps of batch 32",
            ),
            "paper": Scale(
                _arms(sampling, 50.0, 110, {"train_size": 20_000, "valid_size": 1_000, "test_size": 1_000}),
                (0, 1, 2),
                {"steps": 30_000, "batch_size": 32, "lr": 0.001, "eval_every": 1000},
                "50 ms of signal (the task's default), 110 units, 30,000 steps",
            ),
        },
        reference=reference,
        curve="accuracy",
    )
