"""Reader for the IDX format of the MNIST files (LeCun et al., http://yann.lecun.com/exdb/mnist/).

An IDX file is a 4-byte magic number ``0x00 0x00 type ndim`` (type ``0x08``: unsigned bytes),
then ``ndim`` big-endian 32-bit sizes, then the data in C order. MNIST uses ``0x00000803`` for
images ``(N, 28, 28)`` and ``0x00000801`` for labels ``(N,)``. Files may be gzip-compressed
(``.gz``). Every way a file can be damaged is reported as a ``TaskError`` naming the file.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor

from rnnzoo.pipeline.tasks.base import TaskError

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
FIX = "delete it and download it again"


def read_idx(path: Path, magic: int) -> Tensor:
    """The uint8 array stored in ``path`` (raw or ``.gz``), which must carry ``magic``."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise TaskError(f"{path}: truncated IDX file ({len(data)} bytes, no header); {FIX}")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise TaskError(f"{path}: not the expected IDX file (magic 0x{found:08x}, expected 0x{magic:08x}); {FIX}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise TaskError(f"{path}: truncated IDX header ({len(data)} of {header} bytes); {FIX}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    size = math.prod(dims)
    if len(data) - header != size:
        state = "truncated" if len(data) - header < size else "longer than its header says"
        raise TaskError(f"{path}: {state}: {len(data) - header} data bytes for sizes {dims} ({size} bytes); {FIX}")
    if size == 0:  # torch.frombuffer refuses an empty buffer
        return torch.empty(dims, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(dims)


def read_labelled_images(images_path: Path, labels_path: Path) -> tuple[Tensor, Tensor]:
    """Images ``(N, rows, cols)`` uint8 and labels ``(N,)`` long from an IDX pair of the same ``N``."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC).long()
    if images.shape[0] != labels.shape[0]:
        raise TaskError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels: "
            f"the two files come from different releases or one is damaged; delete both and download them again"
        )
    return images, labels


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as file:
                return file.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError; EOFError: cut-off gzip stream
        raise TaskError(f"cannot read {path}: {error}; {FIX}") from error
