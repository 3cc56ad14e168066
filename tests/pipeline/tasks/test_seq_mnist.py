"""Sequential MNIST: pixel and row sequences, the fixed pMNIST permutation, and MNIST files
read from data_dir (fake IDX files here), with the t10k fallback and clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from rnnzoo.pipeline.tasks import make_task, seq_mnist
from rnnzoo.pipeline.tasks.base import Splits, TaskError
from rnnzoo.pipeline.tasks.download import md5_of
from rnnzoo.pipeline.tasks.seq_mnist import pixel_permutation
from tests.pipeline.tasks.fake_mnist import write_mnist_part

DIGITS = 1797


def prepare(options: dict, data_dir: Path | None = None, seed: int = 0) -> Splits:
    return make_task("seq_mnist", options).prepare(data_dir, seed)


def test_digits_pixel_and_row_modes_hold_the_same_images() -> None:
    pixels = prepare({})
    rows = prepare({"mode": "row"})
    assert pixels["train"]["x"].shape == (round(DIGITS * 0.8), 64, 1)
    assert rows["train"]["x"].shape == (round(DIGITS * 0.8), 8, 8)
    assert rows["valid"]["x"].shape == (179, 8, 8) and rows["test"]["x"].shape == (180, 8, 8)  # the held-out 20%, halved
    torch.testing.assert_close(pixels["train"]["x"].reshape(-1, 8, 8), rows["train"]["x"])
    assert torch.equal(pixels["valid"]["target"], rows["valid"]["target"])
    assert 0.0 <= float(pixels["train"]["x"].min()) and float(pixels["train"]["x"].max()) == 1.0


def test_permuted_pixels_are_one_fixed_permutation_of_the_plain_sequence() -> None:
    plain = prepare({})
    permuted = prepare({"permuted": True, "permutation_seed": 5})
    again = prepare({"permuted": True, "permutation_seed": 5}, seed=1)  # another data split, same permutation
    order = pixel_permutation(64, 5)
    assert torch.equal(order.sort().values, torch.arange(64))
    assert not torch.equal(order, torch.arange(64))
    for split in ("train", "valid", "test"):
        assert torch.equal(permuted[split]["x"], plain[split]["x"][:, order])
    plain_again = prepare({}, seed=1)
    assert torch.equal(again["train"]["x"], plain_again["train"]["x"][:, order])
    assert not torch.equal(pixel_permutation(64, 6), order)


def test_limit_caps_train_only() -> None:
    splits = prepare({"limit": 30})
    assert splits["train"]["x"].shape[0] == 30 and splits["valid"]["x"].shape[0] == 179 and splits["test"]["x"].shape[0] == 180


def test_digit_split_is_a_partition_of_the_bundled_digits() -> None:
    from sklearn.datasets import load_digits

    splits = prepare({"mode": "row"})
    parts = [splits[name] for name in ("train", "valid", "test")]
    ours = torch.cat([part["x"] for part in parts]).flatten(1) * 16  # back to grey levels 0..16
    ours = torch.cat([ours, torch.cat([part["target"] for part in parts]).unsqueeze(1).float()], 1)
    digits = load_digits()
    theirs = torch.cat([torch.as_tensor(digits.data).float(), torch.as_tensor(digits.target).unsqueeze(1).float()], 1)
    for left, right in zip(torch.unique(ours, dim=0, return_counts=True), torch.unique(theirs, dim=0, return_counts=True)):
        assert torch.equal(left, right)  # the same (image, label) rows, each as often


def test_baseline_is_the_class_prior() -> None:
    task = make_task("seq_mnist", {})
    spec = task.spec(task.prepare(None, 0))
    assert spec.head == "last_classification" and spec.output_size == 10 and spec.input_size == 1
    assert spec.baseline_loss == pytest.approx(2.3026, abs=0.05)
    assert "accuracy" in spec.baseline


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_files_train_and_validate_on_train_and_test_on_t10k(tmp_path: Path, gz: bool) -> None:
    write_mnist_part(tmp_path, "train", 30, seed=1, gz=gz)
    t10k_images, t10k_labels = write_mnist_part(tmp_path, "t10k", 20, seed=2, gz=gz)
    splits = prepare({"source": "mnist", "download": False}, tmp_path)
    assert splits["train"]["x"].shape == (24, 784, 1) and splits["valid"]["x"].shape == (6, 784, 1)
    torch.testing.assert_close(splits["test"]["x"], t10k_images.reshape(20, 784, 1).float() / 255)
    assert torch.equal(splits["test"]["target"], t10k_labels.long())
    rows = prepare({"source": "mnist", "download": False, "mode": "row", "limit": 7}, tmp_path)
    assert rows["train"]["x"].shape == (7, 28, 28)


def test_mnist_without_train_files_splits_t10k_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_mnist_part(tmp_path, "t10k", 50, seed=2)
    with caplog.at_level(logging.WARNING, logger="rnnzoo.pipeline.tasks.seq_mnist"):
        splits = prepare({"source": "mnist", "download": False, "valid_fraction": 0.2}, tmp_path)
    assert splits["train"]["x"].shape[0] == 40 and splits["valid"]["x"].shape[0] == splits["test"]["x"].shape[0] == 5
    assert "splitting the 10k t10k images" in caplog.text


def test_train_files_false_splits_t10k_even_beside_the_train_pair(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # rnnzoo reproduce's cpu scale: the same 8,000 / 1,000 / 1,000 of the test images on every machine.
    write_mnist_part(tmp_path, "train", 30, seed=1)
    t10k_images, _ = write_mnist_part(tmp_path, "t10k", 50, seed=2)
    options = {"source": "mnist", "download": False, "valid_fraction": 0.2}
    with caplog.at_level(logging.WARNING, logger="rnnzoo.pipeline.tasks.seq_mnist"):
        alone = prepare({**options, "train_files": False}, tmp_path)
    assert "splitting the 10k t10k images" not in caplog.text, "asked for: no warning"
    sizes = {name: split["x"].shape[0] for name, split in alone.items()}
    assert sizes == {"train": 40, "valid": 5, "test": 5}
    together = torch.cat([split["x"] for split in alone.values()]).reshape(50, -1)
    expected = t10k_images.reshape(50, -1).float() / 255
    assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, expected.tolist())), "a partition of the t10k images"
    assert prepare(options, tmp_path)["train"]["x"].shape[0] == 24, "by default the train pair is read"


def test_missing_mnist_files_say_which_files_go_where(tmp_path: Path) -> None:
    wanted = r"train-images-idx3-ubyte.gz, .*t10k-labels-idx1-ubyte.gz"
    with pytest.raises(TaskError, match=rf"(?s)MNIST files missing in {tmp_path}: put {wanted} there"):
        prepare({"source": "mnist", "download": False}, tmp_path)
    with pytest.raises(TaskError, match="needs prepare.data_dir"):
        prepare({"source": "mnist"}, None)


def test_missing_mnist_files_are_downloaded_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    write_mnist_part(mirror, "t10k", 20, seed=2)
    digests = {stem: md5_of(mirror / f"{stem}.gz") for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    monkeypatch.setattr(seq_mnist, "MNIST_MIRRORS", ((tmp_path / "nowhere").as_uri() + "/", mirror.as_uri() + "/"))
    monkeypatch.setattr(seq_mnist, "MNIST_MD5", {**seq_mnist.MNIST_MD5, **digests})
    data_dir = tmp_path / "data"
    splits = prepare({"source": "mnist"}, data_dir)  # train files fail to download: t10k is split
    assert sorted(p.name for p in data_dir.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert sum(split["x"].shape[0] for split in splits.values()) == 20


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "column"}, r"seq_mnist option 'mode' must be one of 'pixel', 'row', got 'column'"),
        ({"source": "emnist"}, r"seq_mnist option 'source' must be one of 'digits', 'mnist', got 'emnist'"),
        ({"mode": "row", "permuted": True}, r"seq_mnist option 'permuted' must be false with mode 'row' \(pMNIST permutes pixels: it needs mode 'pixel'\), got True"),
        ({"valid_fraction": 1.0}, r"seq_mnist option 'valid_fraction' must be a number in \(0, 1\), got 1\.0"),
        ({"limit": 0}, r"'limit' must be null or an integer >= 1, got 0"),
        ({"limit": "all"}, r"'limit' must be null or an integer >= 1, got 'all'"),
        ({"permuted": 1}, r"seq_mnist option 'permuted' must be of type bool, got 1"),
    ],
)
def test_bad_seq_mnist_options_name_the_value(options: dict, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        make_task("seq_mnist", options)
