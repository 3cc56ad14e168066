"""Small IDX files written in a test's tmp_path, standing in for the MNIST files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch
from torch import Tensor

from rnnzoo.pipeline.tasks.idx import IMAGES_MAGIC, LABELS_MAGIC


def idx_bytes(array: Tensor, magic: int) -> bytes:
    """``array`` (uint8) in IDX layout: magic, big-endian sizes, data in C order."""
    return struct.pack(f">I{array.dim()}I", magic, *array.shape) + array.contiguous().numpy().tobytes()


def write_idx(path: Path, array: Tensor, magic: int) -> Path:
    """Write ``array`` to ``path``, gzip-compressed when the name ends in ``.gz``."""
    data = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_mnist_part(directory: Path, part: str, count: int, seed: int, gz: bool = True) -> tuple[Tensor, Tensor]:
    """A fake ``part`` ("train" or "t10k") of ``count`` 28x28 images; returns (images, labels)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 28, 28), generator=generator, dtype=torch.uint8)
    labels = (torch.arange(count) % 10).to(torch.uint8)  # every class present
    suffix = ".gz" if gz else ""
    kind = "train" if part == "train" else "t10k"
    write_idx(directory / f"{kind}-images-idx3-ubyte{suffix}", images, IMAGES_MAGIC)
    write_idx(directory / f"{kind}-labels-idx1-ubyte{suffix}", labels, LABELS_MAGIC)
    return images, labels
