"""Claim 5c (seed 002's own experiment): with 32 units, a Phased LSTM learns sequential MNIST where an LSTM does not."""

from rnnzoo.pipeline.claims.base import CPU_MNIST, Arm, Better, Claim, Scale


def _arms(task: dict) -> tuple[Arm, ...]:
    return (Arm("phased_lstm", "phased_lstm", "seq_mnist", 32, {}, task), Arm("lstm", "lstm", "seq_mnist", 32, {}, task))


CLAIM = Claim(
    name="phased_smnist",
    seed_repository="seed 002 (Phased LSTM; its README's sequential MNIST experiment)",
    paper="Neil, Pfeiffer & Liu, NIPS 2016; the seed repository's own MNIST experiment",
    figure="seed README: with 32 units on sequential MNIST the LSTM does not learn, the Phased LSTM does (no figure given)",
    statement="a 32-unit Phased LSTM reaches a higher test accuracy on sequential MNIST than a 32-unit LSTM",
    metric="test.accuracy",
    higher_is_better=True,
    rule=Better("phased_lstm", "lstm", higher_is_better=True),
    scales={
        "smoke": Scale(
            _arms({"source": "digits", "image_size": 4, "limit": 200}),
            (0, 1),
            {"steps": 20, "batch_size": 32, "lr": 0.01, "eval_every": 10},
            "seconds-long check of the machinery on 4 x 4 digits, not a result",
        ),
        "cpu": Scale(
            _arms({**CPU_MNIST, "image_size": 14}),
            (0, 1, 2),
            {"steps": 4000, "batch_size": 100, "lr": 0.001, "eval_every": 250},
            "MNIST's 10,000 test images split 8,000 / 1,000 / 1,000; 14 x 14 (196 steps); 4,000 steps of batch 100 (50 epochs)",
            data="mnist",
        ),
        "paper": Scale(
            _arms({"source": "mnist", "valid_fraction": 0.0833}),
            (0, 1, 2),
            {"steps": 30_000, "batch_size": 100, "lr": 0.001, "eval_every": 1000},
            "the standard files, 784 steps, 30,000 steps of batch 100",
            data="mnist_standard",
        ),
    },
    curve="accuracy",
)
