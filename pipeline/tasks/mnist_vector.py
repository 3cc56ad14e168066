"""MNIST as flat vectors, for the unfolded LSTM that reads one vector and has no time axis.

The images are those of ``seq_mnist`` (same ``source`` and options, the same train / valid /
test splits): x ``(N, 784)`` for MNIST, ``(N, 64)`` for the 8x8 digits (``(N, image_size²)`` when
``image_size`` shrinks them), pixels in [0, 1]. The unfolded LSTM (see ``cells.unfolded_lstm``)
treats the LSTM run for ``depth`` steps as a ``depth``-layer feed-forward network on this vector;
the study's feed-forward comparisons, ``cell: mlp`` and ``cell: cnn``, are in ``pipeline.baselines``.
The baseline loss is the train class prior, as for ``seq_mnist``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from rnnzoo.pipeline.tasks.base import Splits, Task, TaskSpec
from rnnzoo.pipeline.tasks.seq_mnist import CLASSES, ImageOptions, class_prior_baseline, load_images


@dataclasses.dataclass(frozen=True)
class MNISTVectorOptions(ImageOptions):
    task: ClassVar[str] = "mnist_vector"


class MNISTVectorTask(Task):
    name = "mnist_vector"
    head = "vector_classification"
    Options = MNISTVectorOptions
    vector_input = True

    def prepare(self, data_dir: Path | None, seed: int) -> Splits:
        splits = load_images(self.options, data_dir, seed)
        # x (N, rows, cols) -> (N, rows * cols)
        return {name: {"x": split["x"].flatten(1), "target": split["target"]} for name, split in splits.items()}

    def spec(self, splits: Splits) -> TaskSpec:
        loss, text = class_prior_baseline(splits)
        return TaskSpec(
            input_size=splits["train"]["x"].shape[1], output_size=CLASSES, head=self.head,
            baseline_loss=loss, baseline=text, loss_name="cross_entropy",
        )
