"""Claim 7 (seed 004): at a fixed parameter budget, deeper recurrence transitions model language better.

Each depth gets the width at which its recurrent layer (input projection and highway micro-layers)
has as many parameters as depth 1's at the scale's base width: the paper held the parameter count
fixed while the depth grew. Input and output embeddings are tied (so the embedding is as wide as
the layer), as in the paper's depth sweep. The tied embedding grows with the width, so the models'
totals are not matched: they fall with depth (at paper scale about 11.1M at depth 1, 8.0M at
depth 4), which works against the deeper models.
"""

from __future__ import annotations

import bisect

import torch

from rnnzoo import cells
from rnnzoo.pipeline.claims.base import Arm, Claim, Scale, Trend

DEPTHS = (1, 2, 4)


def recurrent_parameters(width: int, depth: int) -> int:
    """Parameters of an RHN layer of ``width`` units and ``depth`` micro-layers fed ``width`` inputs."""
    with torch.device("meta"):
        return sum(p.numel() for p in cells.make("rhn", width, width, depth=depth).parameters())


def matched_width(base_width: int, depth: int) -> int:
    """The width whose depth-``depth`` layer is closest in parameters to depth 1's at ``base_width``.

    The count grows with the width, so a bisection finds it (a scan of every width built 2,500
    layers for the paper scale: over a second at every import of the claims)."""
    budget = recurrent_parameters(base_width, 1)
    widths = range(1, base_width + 1)
    above = bisect.bisect_left(widths, budget, key=lambda width: recurrent_parameters(width, depth))  # first >= budget
    candidates = widths[max(above - 1, 0) : above + 1]
    return min(candidates, key=lambda width: abs(recurrent_parameters(width, depth) - budget))


def _arms(base_width: int, task: dict, dropout: float) -> tuple[Arm, ...]:
    arms = []
    for depth in DEPTHS:
        width = matched_width(base_width, depth)
        options = {"depth": depth, "input_dropout": dropout, "state_dropout": dropout}
        arms.append(Arm(f"depth {depth}", "rhn", "ptb", width, options, task, {"tie_weights": True}))
    return tuple(arms)


# Trained on ptb.valid.txt; ptb.test.txt's lines halved into valid (model selection) and test.
FILES = {"source": "files", "train_file": "{data}/ptb.valid.txt", "valid_file": "{data}/ptb.test.txt"}

CLAIM = Claim(
    name="rhn_depth",
    seed_repository="seed 004 (Recurrent Highway Networks, TensorFlow)",
    paper="Zilly, Srivastava, Koutník & Schmidhuber, 'Recurrent Highway Networks', ICML 2017",
    figure="Fig. 4 / Table: word-level PTB test perplexity falls from 90.6 at recurrence depth 1 to 66.0 at depth 10 (tied embeddings, fixed parameter budget)",
    statement="test perplexity falls as recurrence depth grows from 1 to 2 to 4 at a fixed parameter count (the trend, not the absolute figure)",
    metric="test.perplexity",
    rule=Trend(tuple(f"depth {depth}" for depth in DEPTHS), higher_is_better=False),
    scales={
        "smoke": Scale(
            _arms(12, {"source": "embedded", "sentences": 200, "bptt": 10}, 0.0),
            (0, 1),
            {"steps": 20, "batch_size": 8, "lr": 0.01, "eval_every": 10},
            "seconds-long check of the machinery on embedded text, not a result",
        ),
        "cpu": Scale(
            _arms(128, {**FILES, "bptt": 35}, 0.25),
            (0, 1, 2),
            {"steps": 1000, "batch_size": 20, "lr": 0.002, "eval_every": 100},
            "trained on ptb.valid.txt (74k tokens; the paper trains on ptb.train.txt), evaluated on halves of "
            "ptb.test.txt; depths 1, 2, 4 (paper 1-10) at widths 128, 104, 81 (recurrent layers matched, totals not); base width 128; 1,000 steps of 20 x 35 tokens (~10 epochs)",
            data="ptb",
        ),
        "paper": Scale(
            _arms(830, {"source": "ptb", "bptt": 35}, 0.25),
            (0, 1, 2),
            {
                "steps": 40_000,
                "batch_size": 20,
                "lr": 0.2,
                "optimizer": "sgd",
                "schedule": "step",
                "lr_decay": 0.9804,
                "lr_decay_every": 1328,
                "lr_decay_start": 26_560,
                "eval_every": 1328,
                "grad_clip": 10.0,
            },
            "ptb.train/valid/test, depths 1, 2, 4 at the depth-1 width 830, SGD 0.2 decayed /1.02 an epoch after epoch 20",
            data="ptb",
        ),
    },
    curve="loss",
)
