"""Claim 6 (seed 003): IndRNN solves the adding problem at T = 1000 where an LSTM stays on the baseline."""

from rnnzoo.pipeline.claims.base import Arm, Claim, Contrast, Scale


def _arms(length: int, hidden: int, sizes: dict) -> tuple[Arm, ...]:
    task = {"length": length, **sizes}
    return (
        # 2 x 128 ReLU IndRNN with |u| bounded (the bound from T), as in the paper.
        Arm("indrnn", "indrnn", "adding", hidden, {"num_layers": 2, "sequence_length": length, "last_layer_init": True}, task),
        Arm("lstm", "lstm", "adding", hidden, {}, task),
    )


CLAIM = Claim(
    name="indrnn_adding",
    seed_repository="seed 003 (IndRNN, Theano/Lasagne)",
    paper="Li, Li, Cook, Zhu & Gao, 'Independently recurrent neural network (IndRNN): building a longer and deeper RNN', CVPR 2018",
    figure="Fig. 2: adding problem at T = 1000 (also 5000): IndRNN's MSE falls to about 0; the LSTM stays near 0.167",
    statement="IndRNN's test MSE ends below a tenth of the 0.167 baseline while an LSTM of the same width does not",
    metric="test.mse",
    rule=Contrast("indrnn", "lstm", 0.0167, below=True, what="test MSE"),
    scales={
        "smoke": Scale(
            _arms(8, 8, {"train_size": 64, "valid_size": 32, "test_size": 32}),
            (0, 1),
            {"steps": 20, "batch_size": 16, "lr": 0.002, "eval_every": 10},
            "seconds-long check of the machinery, not a result",
        ),
        "cpu": Scale(
            _arms(500, 128, {"train_size": 10_000, "valid_size": 500, "test_size": 500}),
            (0, 1, 2),
            {"steps": 1500, "batch_size": 50, "lr": 0.0002, "eval_every": 150},
            "T = 500 (paper 1000 and 5000); 2 x 128 units; 1,500 steps of batch 50 (paper: until solved, lr x0.1 every 20k steps)",
        ),
        "paper": Scale(
            _arms(1000, 128, {"train_size": 100_000, "valid_size": 1_000, "test_size": 1_000}),
            (0, 1, 2),
            {
                "steps": 60_000,
                "batch_size": 50,
                "lr": 0.0002,
                "schedule": "step",
                "lr_decay": 0.1,
                "lr_decay_every": 20_000,
                "eval_every": 1000,
            },
            "T = 1000, 2 x 128, Adam 2e-4, lr x0.1 every 20,000 steps",
        ),
    },
    curve="loss",
)
