"""Claim 1 (seed 000): JANET learns the adding problem, leaving the 0.167 baseline early."""

from rnnzoo.pipeline.claims.base import Arm, Claim, Reaches, Scale


def _arms(length: int, hidden: int, sizes: dict) -> tuple[Arm, ...]:
    task = {"length": length, **sizes}
    return (
        Arm("janet", "janet", "adding", hidden, {"max_timescale": length}, task),  # chrono-initialised, as in the paper
        Arm("lstm", "lstm", "adding", hidden, {}, task),  # the same width beside it
    )


CLAIM = Claim(
    name="janet_adding",
    seed_repository="seed 000 (JANET, Keras)",
    paper="van der Westhuizen & Lasenby, 'The unreasonable effectiveness of the forget gate', arXiv:1804.04849, 2018",
    figure="Fig. 2: JANET's MSE leaves the 0.167 baseline within the first few thousand steps at T = 100, 500 and 750",
    statement="JANET learns the adding problem: its test MSE ends far below the memoryless 0.167",
    metric="test.mse",
    # A tenth of the baseline: well past the plateau, whatever the exact final precision.
    rule=Reaches("janet", 0.0167, below=True, what="test MSE"),
    scales={
        "smoke": Scale(
            _arms(8, 8, {"train_size": 64, "valid_size": 32, "test_size": 32}),
            (0, 1),
            {"steps": 20, "batch_size": 16, "lr": 0.01, "eval_every": 10},
            "seconds-long check of the machinery, not a result",
        ),
        "cpu": Scale(
            _arms(100, 64, {"train_size": 10_000, "valid_size": 1_000, "test_size": 1_000}),
            (0, 1, 2),
            {"steps": 3000, "batch_size": 50, "lr": 0.001, "eval_every": 250},
            "T = 100 only (the paper also 500, 750); 64 units; 3,000 steps of batch 50",
        ),
        "paper": Scale(
            _arms(750, 128, {"train_size": 100_000, "valid_size": 1_000, "test_size": 1_000}),
            (0, 1, 2),
            {"steps": 20_000, "batch_size": 50, "lr": 0.001, "eval_every": 500},
            "T = 750, the paper's longest; 128 units; 20,000 steps",
        ),
    },
    curve="loss",
)
