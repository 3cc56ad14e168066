"""Claim 3 (seed 000): chrono initialisation lets an LSTM solve the copy task where the usual one stalls."""

from rnnzoo.pipeline.claims.base import Arm, Claim, Contrast, Run, Scale


def _arms(length: int, hidden: int, sizes: dict) -> tuple[Arm, ...]:
    task = {"length": length, **sizes}
    return (
        Arm("chrono_lstm", "chrono_lstm", "copy", hidden, {"max_timescale": 3 * length // 2}, task),  # T_max = 3T/2
        Arm("lstm", "lstm", "copy", hidden, {}, task),
    )


def loss_over_baseline(run: Run) -> float:
    """Test cross-entropy over the memoryless baseline (the paper's 10 log 8 / (T + 20) per step of
    the whole sequence; log 8 per recalled symbol, as the task scores only the recall steps)."""
    return run.metrics["test.loss"] / run.metrics["baseline_loss"]


CLAIM = Claim(
    name="chrono_copy",
    seed_repository="seed 000 (JANET and chrono initialisation)",
    paper="Tallec & Ollivier, 'Can recurrent neural networks warp time?', ICLR 2018",
    figure="Fig. 3: on the copy task (T = 500 and 2000) chrono LSTM falls below the memoryless baseline 10 log 8 / (T + 20); "
    "an LSTM with the usual initialisation stays on it",
    statement="chrono_lstm (T_max = 3T/2) ends below half the memoryless baseline; an LSTM with the usual initialisation does not",
    metric="test loss / memoryless baseline",
    measure=loss_over_baseline,
    rule=Contrast("chrono_lstm", "lstm", 0.5, below=True, what="test loss / baseline"),
    scales={
        "smoke": Scale(
            _arms(5, 8, {"train_size": 64, "valid_size": 32, "test_size": 32}),
            (0, 1),
            {"steps": 20, "batch_size": 16, "lr": 0.01, "eval_every": 10},
            "seconds-long check of the machinery, not a result",
        ),
        "cpu": Scale(
            _arms(100, 64, {"train_size": 10_000, "valid_size": 500, "test_size": 500}),
            (0, 1, 2),
            {"steps": 2500, "batch_size": 32, "lr": 0.001, "eval_every": 250},
            "T = 100 (paper 500 and 2000); 64 units (paper 128); 2,500 steps of batch 32",
        ),
        "paper": Scale(
            _arms(500, 128, {"train_size": 100_000, "valid_size": 1_000, "test_size": 1_000}),
            (0, 1, 2),
            {"steps": 30_000, "batch_size": 32, "lr": 0.001, "eval_every": 1000},
            "T = 500; 128 units; 30,000 steps",
        ),
    },
    reference=None,
    curve="loss",
)
