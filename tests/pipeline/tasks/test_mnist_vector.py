"""MNIST as flat vectors for the unfolded LSTM: the seq_mnist images without a time axis."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rnnzoo.pipeline.tasks import make_task
from rnnzoo.pipeline.tasks.base import TaskError
from tests.pipeline.tasks.fake_mnist import write_mnist_part


def test_vectors_are_the_flattened_seq_mnist_images() -> None:
    vectors = make_task("mnist_vector", {}).prepare(None, 2)
    rows = make_task("seq_mnist", {"mode": "row"}).prepare(None, 2)
    for split in ("train", "valid", "test"):
        assert torch.equal(vectors[split]["x"], rows[split]["x"].flatten(1))
        assert torch.equal(vectors[split]["target"], rows[split]["target"])


def test_spec_is_a_vector_classification() -> None:
    task = make_task("mnist_vector", {"limit": 10})
    spec = task.spec(task.prepare(None, 0))
    assert task.vector_input and spec.head == "vector_classification"
    assert spec.input_size == 64 and spec.output_size == 10


def test_mnist_source_gives_784_inputs(tmp_path: Path) -> None:
    write_mnist_part(tmp_path, "t10k", 20, seed=0, gz=False)
    splits = make_task("mnist_vector", {"source": "mnist", "download": False}).prepare(tmp_path, 0)
    assert splits["train"]["x"].shape == (16, 784) and splits["valid"]["x"].shape == splits["test"]["x"].shape == (2, 784)


def test_bad_options_name_this_task() -> None:
    with pytest.raises(TaskError, match=r"mnist_vector option 'source' must be one of 'digits', 'mnist', got 'cifar'"):
        make_task("mnist_vector", {"source": "cifar"})
    with pytest.raises(TaskError, match=r"unknown option mode( \(did you mean \w+\?\))?; allowed for task 'mnist_vector'"):
        make_task("mnist_vector", {"mode": "row"})
