"""The IDX reader: raw and gzip files, and every kind of damage named with its file."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from rnnzoo.pipeline.tasks.base import TaskError
from rnnzoo.pipeline.tasks.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, read_labelled_images
from tests.pipeline.tasks.fake_mnist import idx_bytes, write_idx

IMAGES = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 3, 4)
LABELS = torch.tensor([7, 1], dtype=torch.uint8)


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_returns_the_written_images_raw_or_gzip(tmp_path: Path, name: str) -> None:
    path = write_idx(tmp_path / name, IMAGES, IMAGES_MAGIC)
    assert torch.equal(read_idx(path, IMAGES_MAGIC), IMAGES)


def test_read_labelled_images_pairs_images_with_long_labels(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images.gz", IMAGES, IMAGES_MAGIC)
    labels = write_idx(tmp_path / "labels", LABELS, LABELS_MAGIC)
    got_images, got_labels = read_labelled_images(images, labels)
    assert torch.equal(got_images, IMAGES)
    assert got_labels.dtype == torch.long and got_labels.tolist() == [7, 1]


def test_bad_magic_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels-but-images", IMAGES, IMAGES_MAGIC)
    with pytest.raises(TaskError, match=r"labels-but-images.*magic 0x00000803, expected 0x00000801.*download it again"):
        read_idx(path, LABELS_MAGIC)


@pytest.mark.parametrize("keep", [2, 10, 20])  # inside the magic, inside the sizes, inside the data
def test_truncated_file_names_the_file(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "cut-idx3-ubyte"
    path.write_bytes(idx_bytes(IMAGES, IMAGES_MAGIC)[:keep])
    with pytest.raises(TaskError, match=r"cut-idx3-ubyte.*truncated.*download it again"):
        read_idx(path, IMAGES_MAGIC)


def test_cut_off_gzip_stream_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(IMAGES, IMAGES_MAGIC))[:-12])
    with pytest.raises(TaskError, match=r"cut\.gz.*download it again"):
        read_idx(path, IMAGES_MAGIC)


def test_trailing_bytes_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(LABELS, LABELS_MAGIC) + b"\x00")
    with pytest.raises(TaskError, match="longer than its header says"):
        read_idx(path, LABELS_MAGIC)


def test_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images", IMAGES, IMAGES_MAGIC)
    labels = write_idx(tmp_path / "labels", torch.tensor([1, 2, 3], dtype=torch.uint8), LABELS_MAGIC)
    with pytest.raises(TaskError, match=r"2 images but .*labels holds 3 labels.*delete both"):
        read_labelled_images(images, labels)
