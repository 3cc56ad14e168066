"""Sequential MNIST: classify a digit read one pixel (or one row) per step.

Pixel by pixel (784 steps of 1 input) and its permuted form pMNIST, where one fixed random
permutation of the pixels is applied to every image, are from Le, Jaitly & Hinton, "A Simple Way
to Initialize Recurrent Networks of Rectified Linear Units", 2015 (arXiv:1504.00941); row by row
is 28 steps of 28 inputs. The class is read from the last step.

``source: digits`` (the default) uses scikit-learn's bundled 8x8 digits (1,797 images, no
download): 64 steps of 1, or 8 rows of 8. ``source: mnist`` reads the four standard IDX files from
``data_dir`` (downloading them, with MD5 checks, where the network allows); when only the t10k
pair is there it is split into train and valid and a warning says so. The baseline is the
memoryless predictor: the train class prior (≈ log 10 nats) and the majority class.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from pipeline.tasks.base import Split, Splits, Task, TaskError, TaskSpec, prior_cross_entropy, require
from pipeline.tasks.download import download
from pipeline.tasks.idx import read_labelled_images

log = logging.getLogger(__name__)

SOURCES = ("digits", "mnist")
MODES = ("pixel", "row")
CLASSES = 10
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
MNIST_MD5 = {  # of the canonical .gz files
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_PAIRS = {  # part -> (images, labels)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """Where the digit images come from; shared by ``seq_mnist`` and ``mnist_vector``."""

    task: ClassVar[str] = "seq_mnist"  # names the task in error messages
    source: str = "digits"  # "digits" (sklearn's 8x8, offline) or "mnist" (IDX files in data_dir)
    valid_fraction: float = 0.2  # held out when one set is split in two (digits; MNIST without train files)
    limit: int | None = None  # at most this many train examples
    download: bool = True  # fetch missing MNIST files from the mirrors

    def __post_init__(self) -> None:
        require(self.source in SOURCES, f"{self.task} option 'source' must be one of {', '.join(SOURCES)}, got {self.source!r}")
        fraction = self.valid_fraction
        require(0.0 < fraction < 1.0, f"{self.task} option 'valid_fraction' must lie in (0, 1), got {fraction!r}")
        require(
            self.limit is None or (isinstance(self.limit, int) and not isinstance(self.limit, bool) and self.limit >= 1),
            f"{self.task} option 'limit' must be null or an integer >= 1, got {self.limit!r}",
        )


@dataclasses.dataclass(frozen=True)
class SeqMNISTOptions(ImageOptions):
    mode: str = "pixel"  # "pixel": one pixel a step; "row": one row a step
    permuted: bool = False  # pMNIST: pixels in a fixed random order
    permutation_seed: int = 0  # the permutation's own seed, independent of the data seed

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.mode in MODES, f"seq_mnist option 'mode' must be one of {', '.join(MODES)}, got {self.mode!r}")
        require(
            not self.permuted or self.mode == "pixel",
            f"seq_mnist option 'permuted' needs mode 'pixel' (pMNIST permutes pixels), got mode {self.mode!r}",
        )


def load_images(options: ImageOptions, data_dir: Path | None, seed: int) -> Splits:
    """Train and valid images, x ``(N, rows, cols)`` float in [0, 1], target ``(N,)`` long."""
    generator = torch.Generator().manual_seed(seed)
    if options.source == "digits":
        images, labels = _digits()
        splits = _split(images, labels, options.valid_fraction, generator)
    else:
        splits = _mnist(options, data_dir, generator)
    if options.limit is not None:
        splits["train"] = {key: value[: options.limit] for key, value in splits["train"].items()}
    return splits


def pixel_permutation(pixels: int, permutation_seed: int) -> Tensor:
    """pMNIST's fixed pixel order ``(pixels,)``: the same for train, valid and every run."""
    return torch.randperm(pixels, generator=torch.Generator().manual_seed(permutation_seed))


def class_prior_baseline(splits: Splits) -> tuple[float, str]:
    """Cross-entropy on valid of the (add-one smoothed) train class prior, and its description."""
    loss, prior = prior_cross_entropy(splits["train"]["target"], splits["valid"]["target"], CLASSES)
    valid = torch.bincount(splits["valid"]["target"], minlength=CLASSES).double() / splits["valid"]["target"].numel()
    majority = int(prior.argmax())
    text = (
        f"ignoring the input: the train class prior, cross-entropy {loss:.4f} (log 10 = {math.log(CLASSES):.4f}); "
        f"always class {majority}: accuracy {float(valid[majority]):.4f}"
    )
    return loss, text


def _digits() -> tuple[Tensor, Tensor]:
    try:
        from sklearn.datasets import load_digits  # imported here: only this source needs scikit-learn
    except ImportError as error:
        raise TaskError("source 'digits' needs scikit-learn (pip install scikit-learn); or use source 'mnist'") from error
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0  # (1797, 8, 8), grey levels 0..16
    return images, torch.as_tensor(digits.target, dtype=torch.long)


def _split(images: Tensor, labels: Tensor, valid_fraction: float, generator: torch.Generator) -> Splits:
    count = images.shape[0]
    valid_count = round(count * valid_fraction)
    require(
        0 < valid_count < count,
        f"option 'valid_fraction' = {valid_fraction} of {count} images leaves an empty split; pick a fraction nearer 0.5",
    )
    order = torch.randperm(count, generator=generator)
    valid, train = order[:valid_count], order[valid_count:]
    return {"train": {"x": images[train], "target": labels[train]}, "valid": {"x": images[valid], "target": labels[valid]}}


def _mnist(options: ImageOptions, data_dir: Path | None, generator: torch.Generator) -> Splits:
    wanted = ", ".join(f"{stem}.gz" for stem in MNIST_MD5)
    require(data_dir is not None, f"source 'mnist' needs prepare.data_dir: a directory holding {wanted} (or unzipped)")
    failures: list[str] = []
    t10k = _pair(data_dir, "t10k", options.download, failures)
    if t10k is None:
        reasons = "".join(f"\n  {failure}" for failure in failures)
        raise TaskError(
            f"MNIST files missing in {data_dir}: put {wanted} there (.gz or unzipped; the t10k pair alone is "
            f"enough: it is then split into train and valid).{reasons}"
        )
    train = _pair(data_dir, "train", options.download, failures)
    if train is None:
        log.warning(
            "MNIST train files not in %s (%s): splitting the 10k t10k images into train and valid "
            "(valid_fraction %s, seeded). These figures are not the standard 60k/10k protocol.",
            data_dir, "; ".join(failures), options.valid_fraction,
        )
        return _split(*t10k, options.valid_fraction, generator)
    return {"train": {"x": train[0], "target": train[1]}, "valid": {"x": t10k[0], "target": t10k[1]}}


def _pair(data_dir: Path, part: str, may_download: bool, failures: list[str]) -> tuple[Tensor, Tensor] | None:
    """Images in [0, 1] and labels of ``part``, or None (with the reasons in ``failures``)."""
    paths = [_find(data_dir, stem, may_download, failures) for stem in MNIST_PAIRS[part]]
    if None in paths:
        return None
    images, labels = read_labelled_images(*paths)
    require(
        labels.numel() == 0 or 0 <= int(labels.min()) and int(labels.max()) < CLASSES,
        f"{paths[1]}: labels outside 0..9, not an MNIST label file; delete it and download it again",
    )
    return images.float() / 255.0, labels  # (N, 28, 28) grey levels 0..255 -> [0, 1]


def _find(data_dir: Path, stem: str, may_download: bool, failures: list[str]) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (data_dir / name).is_file():
            return data_dir / name
    if not may_download:
        failures.append(f"{stem}(.gz): not found (download: false)")
        return None
    try:
        return download([mirror + f"{stem}.gz" for mirror in MNIST_MIRRORS], data_dir / f"{stem}.gz", MNIST_MD5[stem])
    except TaskError as error:
        failures.append(str(error))
        return None


class SeqMNISTTask(Task):
    name = "seq_mnist"
    head = "last_classification"
    Options = SeqMNISTOptions

    def prepare(self, data_dir: Path | None, seed: int) -> Splits:
        splits = load_images(self.options, data_dir, seed)
        return {name: self._sequences(split) for name, split in splits.items()}

    def _sequences(self, split: Split) -> Split:
        images = split["x"]  # (N, rows, cols)
        if self.options.mode == "row":
            return {"x": images, "target": split["target"]}  # (N, rows, cols): one row a step
        pixels = images.flatten(1)  # (N, rows * cols)
        if self.options.permuted:
            pixels = pixels[:, pixel_permutation(pixels.shape[1], self.options.permutation_seed)]
        return {"x": pixels.unsqueeze(-1), "target": split["target"]}  # (N, rows * cols, 1)

    def spec(self, splits: Splits) -> TaskSpec:
        loss, text = class_prior_baseline(splits)
        return TaskSpec(
            input_size=splits["train"]["x"].shape[-1], output_size=CLASSES, head=self.head,
            baseline_loss=loss, baseline=text, loss_name="cross_entropy",
        )
