"""Sequential MNIST: classify a digit read one pixel (or one row) per step.

Pixel by pixel (784 steps of 1 input) and its permuted form pMNIST, where one fixed random
permutation of the pixels is applied to every image, are from Le, Jaitly & Hinton, "A Simple Way
to Initialize Recurrent Networks of Rectified Linear Units", 2015 (arXiv:1504.00941); row by row
is 28 steps of 28 inputs. The class is read from the last step.

``source: digits`` (the default) uses scikit-learn's bundled 8x8 digits (1,797 images, no
download): 64 steps of 1, or 8 rows of 8. ``source: mnist`` reads the four standard IDX files from
``data_dir`` (downloading them, with MD5 checks, where the network allows). The baseline is the
memoryless predictor: the train class prior (≈ log 10 nats) and the majority class, on valid.

Splits. Train, valid (to select a checkpoint on) and test (to report on) are disjoint:

    MNIST train and t10k files   train file minus valid_fraction of it | that part | t10k
    t10k alone (warned), digits  one seeded shuffle: 1 - valid_fraction | the held-out part split
                                 by test_fraction: valid then test
    train_files: false           as t10k alone, even where the train files are (not warned): the
                                 same split on every machine, whatever its data folder holds

With the defaults (valid_fraction 0.2, test_fraction 0.5) the 10,000 t10k images give 8,000 /
1,000 / 1,000 and the 1,797 digits 1,438 / 179 / 180. What changed when the test split came: train
is the same images as before (the same seed, the same order), and valid, which was the whole
held-out part, is now its first part; with the train files, valid used to be t10k and is now
carved out of the train file (t10k is the test split, the standard protocol's test set).

``image_size`` shrinks the images by average pooling (28 -> 14 or 7 for MNIST, 8 -> 4 for the
digits) so that CPU runs read shorter sequences: pixel mode at 14 is 196 steps. The pMNIST
permutation applies to the pixels of the shrunk image.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnzoo.cells.checks import is_int, one_of
from rnnzoo.pipeline.tasks.base import Split, Splits, Task, TaskError, TaskSpec, prior_cross_entropy, require_option
from rnnzoo.pipeline.tasks.download import download
from rnnzoo.pipeline.tasks.idx import read_labelled_images

log = logging.getLogger(__name__)

SOURCES = ("digits", "mnist")
FULL_SIZE = {"digits": 8, "mnist": 28}  # the side of each source's square images
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
    # Held out of the set that train comes from: valid and test where one set is split in three
    # (digits; MNIST without train files), valid alone where t10k is the test split.
    valid_fraction: float = 0.2
    test_fraction: float = 0.5  # of the held-out part, the share that is test (one set split in three)
    limit: int | None = None  # at most this many train examples
    download: bool = True  # fetch missing MNIST files from the mirrors
    train_files: bool = True  # false: the t10k pair alone, split in three, even where the train pair is present
    image_size: int | None = None  # side after average pooling: null (the source's side) or a divisor of it

    def __post_init__(self) -> None:
        require_option(self.source in SOURCES, self.task, "source", self.source, one_of(SOURCES))
        for key in ("valid_fraction", "test_fraction"):
            fraction = getattr(self, key)
            require_option(0.0 < fraction < 1.0, self.task, key, fraction, "a number in (0, 1)")
        limit = self.limit
        require_option(limit is None or (is_int(limit) and limit >= 1), self.task, "limit", limit, "null or an integer >= 1")
        size, full = self.image_size, FULL_SIZE[self.source]
        divisors = ", ".join(str(d) for d in range(1, full + 1) if full % d == 0)
        require_option(
            size is None or (is_int(size) and size >= 1 and full % size == 0),
            self.task, "image_size", size, f"null or a divisor of the {self.source} side {full} ({divisors})",
        )


@dataclasses.dataclass(frozen=True)
class SeqMNISTOptions(ImageOptions):
    mode: str = "pixel"  # "pixel": one pixel a step; "row": one row a step
    permuted: bool = False  # pMNIST: pixels in a fixed random order
    permutation_seed: int = 0  # the permutation's own seed, independent of the data seed

    def __post_init__(self) -> None:
        super().__post_init__()
        require_option(self.mode in MODES, "seq_mnist", "mode", self.mode, one_of(MODES))
        require_option(
            not self.permuted or self.mode == "pixel", "seq_mnist", "permuted", self.permuted,
            f"false with mode {self.mode!r} (pMNIST permutes pixels: it needs mode 'pixel')",
        )


def load_images(options: ImageOptions, data_dir: Path | None, seed: int) -> Splits:
    """Train, valid and test images, x ``(N, side, side)`` float32 in [0, 1], target ``(N,)`` long.

    ``side`` is ``options.image_size`` (default: the source's, 8 or 28). Raises ``TaskError`` for
    missing or damaged MNIST files and for fractions that leave a split empty.
    """
    generator = torch.Generator().manual_seed(seed)
    if options.source == "digits":
        images, labels = _digits()
        splits = _split(images, labels, options, generator)
    else:
        splits = _mnist(options, data_dir, generator)
    if options.limit is not None:
        splits["train"] = {key: value[: options.limit] for key, value in splits["train"].items()}
    if options.image_size is not None:
        for split in splits.values():
            split["x"] = shrink(split["x"], options.image_size)
    return splits


def shrink(images: Tensor, size: int) -> Tensor:
    """Average-pool ``(N, side, side)`` images to ``(N, size, size)``; ``size`` must divide ``side``."""
    side = images.shape[-1]
    if side % size:
        raise TaskError(f"option 'image_size' = {size} does not divide the images' side {side}")
    if size == side:
        return images
    return F.avg_pool2d(images.unsqueeze(1), side // size).squeeze(1)  # (N, 1, side, side) -> (N, size, size)


def pixel_permutation(pixels: int, permutation_seed: int) -> Tensor:
    """pMNIST's fixed pixel order ``(pixels,)``: the same for every split and every run."""
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


def _split(images: Tensor, labels: Tensor, options: ImageOptions, generator: torch.Generator) -> Splits:
    """One set in three: a seeded shuffle, train after the held-out part, which is valid then test."""
    count = images.shape[0]
    held = round(count * options.valid_fraction)
    require_option(
        0 < held < count, options.task, "valid_fraction", options.valid_fraction,
        f"a fraction of the {count} images that leaves no split empty (nearer 0.5)",
    )
    test_count = round(held * options.test_fraction)
    require_option(
        0 < test_count < held, options.task, "test_fraction", options.test_fraction,
        f"a fraction of the {held} held-out images that leaves neither valid nor test empty (nearer 0.5, or a larger valid_fraction)",
    )
    # Train is order[held:], as before the test split existed: the same images for the same seed.
    order = torch.randperm(count, generator=generator)
    parts = {"train": order[held:], "valid": order[: held - test_count], "test": order[held - test_count : held]}
    return {name: {"x": images[index], "target": labels[index]} for name, index in parts.items()}


def _carve_valid(images: Tensor, labels: Tensor, options: ImageOptions, generator: torch.Generator) -> Splits:
    """The train file in two: valid_fraction of it (seeded) is valid, the rest train."""
    count = images.shape[0]
    valid_count = round(count * options.valid_fraction)
    require_option(
        0 < valid_count < count, options.task, "valid_fraction", options.valid_fraction,
        f"a fraction of the {count} train images that leaves no split empty (nearer 0.5)",
    )
    order = torch.randperm(count, generator=generator)
    parts = {"train": order[valid_count:], "valid": order[:valid_count]}
    return {name: {"x": images[index], "target": labels[index]} for name, index in parts.items()}


def _mnist(options: ImageOptions, data_dir: Path | None, generator: torch.Generator) -> Splits:
    wanted = ", ".join(f"{stem}.gz" for stem in MNIST_MD5)
    if data_dir is None:
        raise TaskError(f"source 'mnist' needs prepare.data_dir: a directory holding {wanted} (or unzipped)")
    failures: list[str] = []
    t10k = _pair(data_dir, "t10k", options.download, failures)
    if t10k is None:
        reasons = "".join(f"\n  {failure}" for failure in failures)
        raise TaskError(
            f"MNIST files missing in {data_dir}: put {wanted} there (.gz or unzipped; the t10k pair alone is "
            f"enough: it is then split into train, valid and test).{reasons}"
        )
    train = _pair(data_dir, "train", options.download, failures) if options.train_files else None
    if train is None and not options.train_files:
        return _split(*t10k, options, generator)
    if train is None:
        log.warning(
            "MNIST train files not in %s (%s): splitting the 10k t10k images into train, valid and test "
            "(valid_fraction %s, test_fraction %s, seeded). These figures are not the standard 60k/10k protocol.",
            data_dir, "; ".join(failures), options.valid_fraction, options.test_fraction,
        )
        return _split(*t10k, options, generator)
    return {**_carve_valid(*train, options, generator), "test": {"x": t10k[0], "target": t10k[1]}}


def _pair(data_dir: Path, part: str, may_download: bool, failures: list[str]) -> tuple[Tensor, Tensor] | None:
    """Images in [0, 1] and labels of ``part``, or None (with the reasons in ``failures``)."""
    images_path, labels_path = (_find(data_dir, stem, may_download, failures) for stem in MNIST_PAIRS[part])
    if images_path is None or labels_path is None:
        return None
    images, labels = read_labelled_images(images_path, labels_path)
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < CLASSES):
        raise TaskError(f"{labels_path}: labels outside 0..9, not an MNIST label file; delete it and download it again")
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
            baseline_loss=loss, baseline=text, loss_name="cross_entropy", steps=int(splits["train"]["x"].shape[1]),
        )
