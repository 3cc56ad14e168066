"""Claim 6b (seed 003): a deep IndRNN (6 layers) learns sequential MNIST better than an LSTM.

The paper's 6 x 128 ReLU IndRNN (|u| bounded from T, the last layer's u drawn in [(1/2)^(1/T), 1])
against an LSTM of the same width. The paper also puts batch normalisation between the layers,
which the layer here does not have: a difference the runs state.
"""

from typing import Any

from rnnzoo.pipeline.claims.base import CPU_MNIST, Arm, Better, Claim, Scale


def _arms(hidden: int, task: dict[str, Any], side: int) -> tuple[Arm, ...]:
    steps = side * side
    options = {"num_layers": 6, "sequence_length": steps, "last_layer_init": True}
    return (Arm("indrnn", "indrnn", "seq_mnist", hidden, options, task), Arm("lstm", "lstm", "seq_mnist", hidden, {}, task))


CLAIM = Claim(
    name="indrnn_smnist",
    seed_repository="seed 003 (IndRNN, Theano/Lasagne)",
    paper="Li, Li, Cook, Zhu & Gao, 'Independently recurrent neural network (IndRNN): building a longer and deeper RNN', CVPR 2018",
    figure="Table 2: sequential MNIST test error 1.0% (accuracy 99.0) with a 6 x 128 IndRNN; the RNN and LSTM results it lists are worse",
    statement="a 6-layer IndRNN's test accuracy on sequential MNIST beats a 1-layer LSTM's of the same width",
    metric="test.accuracy",
    higher_is_better=True,
    rule=Better("indrnn", "lstm", higher_is_better=True),
    scales={
        "smoke": Scale(
            _arms(8, {"source": "digits", "image_size": 4, "limit": 200}, 4),
            (0, 1),
            {"steps": 20, "batch_size": 32, "lr": 0.01, "eval_every": 10},
            "seconds-long check of the machinery on 4 x 4 digits, not a result",
        ),
        "cpu": Scale(
            _arms(64, {**CPU_MNIST, "image_size": 14}, 14),
            (0, 1, 2),
            {"steps": 4000, "batch_size": 100, "lr": 0.0005, "eval_every": 250},
            "MNIST's 10,000 test images split 8,000 / 1,000 / 1,000; 14 x 14 (196 steps, not 784); "
            "6 x 64 IndRNN without batch norm (paper 6 x 128 with it) against 1 x 64 LSTM; 4,000 steps of batch 100 (50 epochs), Adam 5e-4",
            data="mnist",
        ),
        "paper": Scale(
            _arms(128, {"source": "mnist", "valid_fraction": 0.0833}, 28),
            (0, 1, 2),
            {
                "steps": 120_000,
                "batch_size": 32,
                "lr": 0.0002,
                "schedule": "step",
                "lr_decay": 0.1,
                "lr_decay_every": 40_000,
                "eval_every": 2000,
            },
            "the standard files, 784 steps, 6 x 128 IndRNN (no batch norm) against 1 x 128 LSTM, batch 32, Adam 2e-4 decayed x0.1 every 40,000 steps",
            data="mnist_standard",
        ),
    },
    reference=0.99,
    curve="accuracy",
)
