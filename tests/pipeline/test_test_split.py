"""Every task holds out a test split, disjoint from train and valid, without changing them: the
synthetic tasks draw it last, the image tasks carve it where they carve valid (or take MNIST's
t10k), PTB takes ptb.test.txt or halves the held-out text; prepare's dataset file must hold it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from rnnzoo.pipeline import files
from rnnzoo.pipeline.tasks import TASKS, make_task
from rnnzoo.pipeline.tasks.adding import adding_sequences
from rnnzoo.pipeline.tasks.base import TaskError
from rnnzoo.pipeline.tasks.copy import copy_sequences
from rnnzoo.pipeline.tasks.frequency import FrequencyOptions, frequency_examples
from rnnzoo.pipeline.tasks.ptb import EOS, embedded_corpus, tokenize
from rnnzoo.pipeline.tasks.seq_mnist import ImageOptions, _split, pixel_permutation
from tests.pipeline.tasks.fake_mnist import write_mnist_part
from tests.pipeline.tasks.test_task_contract import SMALL

DIGITS = 1797


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_prepares_train_valid_and_test(name: str) -> None:
    task = make_task(name, SMALL[name])
    splits = task.prepare(None, 0)
    assert list(splits) == ["train", "valid", "test"]
    assert splits["test"].keys() == splits["valid"].keys()
    assert splits["test"]["x"].shape[1:] == splits["valid"]["x"].shape[1:] and splits["test"]["x"].shape[0] >= 1
    assert task.spec(splits).baseline_loss > 0


def _old_draws(draw, train_size: int, valid_size: int, seed: int) -> tuple[dict, dict]:
    """Train and valid as drawn before the test split existed: train, then valid, from one generator."""
    generator = torch.Generator().manual_seed(seed)
    return draw(train_size, generator), draw(valid_size, generator)


SYNTHETIC = {
    "adding": ({"length": 7, "train_size": 30, "valid_size": 9, "test_size": 11}, lambda n, g: adding_sequences(n, 7, g)),
    "copy": ({"length": 3, "train_size": 30, "valid_size": 9, "test_size": 11}, lambda n, g: copy_sequences(n, 3, g)),
    "frequency": (
        {"duration": 8.0, "sampling": "async", "train_size": 30, "valid_size": 9, "test_size": 11},
        lambda n, g: frequency_examples(n, FrequencyOptions(duration=8.0, sampling="async"), g),
    ),
}


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_train_and_valid_are_bit_identical_to_before_and_test_is_drawn_after(name: str) -> None:
    options, draw = SYNTHETIC[name]
    splits = make_task(name, options).prepare(None, 5)
    old_train, old_valid = _old_draws(draw, 30, 9, 5)
    for split, old in (("train", old_train), ("valid", old_valid)):
        assert splits[split].keys() == old.keys()
        assert all(torch.equal(splits[split][key], old[key]) for key in old)
    assert splits["test"]["x"].shape[0] == 11
    flat = {split: splits[split]["x"].flatten(1) for split in splits}
    for other in ("train", "valid"):  # no test example repeats a train or valid one
        assert not (flat["test"].unsqueeze(1) == flat[other].unsqueeze(0)).all(-1).any()


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_test_size_defaults_to_valid_size_and_is_checked(name: str) -> None:
    options = TASKS[name].Options()
    assert options.test_size == options.valid_size
    with pytest.raises(TaskError, match=rf"{name} option 'test_size' must be >= \d.*got 0"):
        make_task(name, {"test_size": 0})


def test_digits_train_is_unchanged_and_the_held_out_part_becomes_valid_then_test() -> None:
    from sklearn.datasets import load_digits

    splits = make_task("seq_mnist", {"mode": "row"}).prepare(None, 3)
    assert [splits[s]["x"].shape[0] for s in ("train", "valid", "test")] == [1438, 179, 180]
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0
    order = torch.randperm(DIGITS, generator=torch.Generator().manual_seed(3))  # the one shuffle, as before
    held = round(DIGITS * 0.2)
    assert torch.equal(splits["train"]["x"], images[order[held:]])  # train: the images it always was
    assert torch.equal(splits["valid"]["x"], images[order[: held - 180]])
    assert torch.equal(splits["test"]["x"], images[order[held - 180 : held]])
    assert torch.equal(splits["test"]["target"], torch.as_tensor(digits.target)[order[held - 180 : held]])


def test_a_ten_thousand_image_set_splits_8000_1000_1000_by_default() -> None:
    images, labels = torch.arange(10_000.0).view(-1, 1, 1), torch.zeros(10_000, dtype=torch.long)
    splits = _split(images, labels, ImageOptions(), torch.Generator().manual_seed(0))
    assert {name: split["x"].shape[0] for name, split in splits.items()} == {"train": 8000, "valid": 1000, "test": 1000}
    seen = torch.cat([split["x"].flatten() for split in splits.values()]).sort().values
    assert torch.equal(seen, torch.arange(10_000.0))  # a partition: every image once


def test_mnist_t10k_alone_is_split_in_three_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_mnist_part(tmp_path, "t10k", 50, seed=2)
    with caplog.at_level(logging.WARNING, logger="rnnzoo.pipeline.tasks.seq_mnist"):
        splits = make_task("mnist_vector", {"source": "mnist", "download": False}).prepare(tmp_path, 0)
    assert [splits[s]["x"].shape[0] for s in ("train", "valid", "test")] == [40, 5, 5]
    assert "train, valid and test" in caplog.text


def test_mnist_with_train_files_tests_on_t10k_and_validates_on_part_of_train(tmp_path: Path) -> None:
    train_images, _ = write_mnist_part(tmp_path, "train", 30, seed=1)
    t10k_images, t10k_labels = write_mnist_part(tmp_path, "t10k", 20, seed=2)
    splits = make_task("mnist_vector", {"source": "mnist", "download": False}).prepare(tmp_path, 0)
    assert [splits[s]["x"].shape[0] for s in ("train", "valid", "test")] == [24, 6, 20]
    torch.testing.assert_close(splits["test"]["x"], t10k_images.flatten(1).float() / 255)
    assert torch.equal(splits["test"]["target"], t10k_labels.long())
    train_and_valid = (torch.cat([splits["train"]["x"], splits["valid"]["x"]]) * 255).round()
    assert torch.equal(torch.unique(train_and_valid, dim=0), torch.unique(train_images.flatten(1).float(), dim=0))  # a partition


@pytest.mark.parametrize(("options", "message"), [
    ({"test_fraction": 1.0}, r"seq_mnist option 'test_fraction' must be a number in \(0, 1\), got 1\.0"),
    ({"valid_fraction": 0.0001}, r"seq_mnist option 'valid_fraction' must be a fraction of the 1797 images that leaves no split empty \(nearer 0.5\), got 0.0001"),
    ({"valid_fraction": 0.01, "test_fraction": 0.01}, r"seq_mnist option 'test_fraction' must be a fraction of the 18 held-out images that leaves neither valid nor test empty .*, got 0.01"),
])
def test_fractions_that_empty_a_split_are_named(options: dict, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        make_task("seq_mnist", options).prepare(None, 0)


def test_image_size_average_pools_and_the_permutation_applies_to_the_shorter_sequence(tmp_path: Path) -> None:
    write_mnist_part(tmp_path, "t10k", 20, seed=2)
    base = {"source": "mnist", "download": False}
    full = make_task("seq_mnist", {**base, "mode": "row"}).prepare(tmp_path, 0)
    small = make_task("seq_mnist", {**base, "image_size": 14}).prepare(tmp_path, 0)
    permuted = make_task("seq_mnist", {**base, "image_size": 14, "permuted": True, "permutation_seed": 4}).prepare(tmp_path, 0)
    for split in ("train", "valid", "test"):
        pooled = F.avg_pool2d(full[split]["x"].unsqueeze(1), 2).flatten(1)  # (N, 196): 2x2 means
        assert small[split]["x"].shape == (full[split]["x"].shape[0], 196, 1)
        torch.testing.assert_close(small[split]["x"].squeeze(-1), pooled)
        assert torch.equal(permuted[split]["x"], small[split]["x"][:, pixel_permutation(196, 4)])
    rows = make_task("seq_mnist", {**base, "image_size": 7, "mode": "row"}).prepare(tmp_path, 0)
    assert rows["train"]["x"].shape[1:] == (7, 7)
    assert make_task("mnist_vector", {"image_size": 4}).prepare(None, 0)["test"]["x"].shape[1] == 16  # digits 8 -> 4


@pytest.mark.parametrize(("options", "message"), [
    ({"image_size": 5}, r"seq_mnist option 'image_size' must be null or a divisor of the digits side 8 \(1, 2, 4, 8\), got 5"),
    ({"source": "mnist", "image_size": 8}, r"a divisor of the mnist side 28 \(1, 2, 4, 7, 14, 28\), got 8"),
    ({"image_size": True}, r"'image_size' must be null or a divisor"),
])
def test_bad_image_size_names_the_allowed_sides(options: dict, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        make_task("seq_mnist", options)


def test_embedded_ptb_train_and_valid_are_unchanged_and_test_is_drawn_after() -> None:
    task = make_task("ptb", {"sentences": 50})
    texts = task.texts(None, 7)
    generator = torch.Generator().manual_seed(7)
    assert (texts.train, texts.valid) == (embedded_corpus(50, generator), embedded_corpus(5, generator))
    assert texts.test == embedded_corpus(5, generator)
    splits = task.prepare(None, 7)
    assert splits["test"]["x"].numel() == len(tokenize(texts.test, "word")) - 1


def test_ptb_with_all_three_files_tests_on_ptb_test(tmp_path: Path) -> None:
    (tmp_path / "ptb.train.txt").write_text(" a b \n b a \n")
    (tmp_path / "ptb.valid.txt").write_text(" a a \n")
    (tmp_path / "ptb.test.txt").write_text(" b b \n a c \n")
    task = make_task("ptb", {"source": "ptb", "download": False})
    splits = task.prepare(tmp_path, 0)
    vocabulary = task.vocabulary(tmp_path, 0)
    assert [vocabulary[i] for i in splits["valid"]["x"].tolist()] == ["a", "a"]
    assert [vocabulary[i] for i in splits["test"]["x"].tolist()] == ["b", "b", EOS, "a", "<unk>"]


def test_ptb_with_only_valid_and_test_trains_on_valid_and_halves_test(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "ptb.valid.txt").write_text(" a b \n b a \n")
    (tmp_path / "ptb.test.txt").write_text(" a \n b \n a b \n b a \n a a \n")  # 5 lines: 2 valid, 3 test
    task = make_task("ptb", {"source": "ptb", "download": False})
    with caplog.at_level(logging.WARNING, logger="rnnzoo.pipeline.tasks.ptb"):
        texts = task.texts(tmp_path, 0)
        splits = task.prepare(tmp_path, 0)
    assert texts == (" a b \n b a \n", " a \n b \n", " a b \n b a \n a a \n")
    assert "training on ptb.valid.txt" in caplog.text and "not the standard protocol" in caplog.text
    assert splits["train"]["x"].numel() == 5 and splits["valid"]["x"].numel() == 3 and splits["test"]["x"].numel() == 8


def test_ptb_without_a_test_file_halves_valid(tmp_path: Path) -> None:
    (tmp_path / "ptb.train.txt").write_text(" a b \n")
    (tmp_path / "ptb.valid.txt").write_text(" a \n b \n")
    assert make_task("ptb", {"source": "ptb", "download": False}).texts(tmp_path, 0) == (" a b \n", " a \n", " b \n")


def test_files_source_reads_test_file_or_halves_valid_file(tmp_path: Path) -> None:
    for name, text in (("t.txt", "a b\n"), ("v.txt", "a\nb\nb a\n"), ("x.txt", "b b\n")):
        (tmp_path / name).write_text(text)
    paths = {"train_file": str(tmp_path / "t.txt"), "valid_file": str(tmp_path / "v.txt")}
    assert make_task("ptb", {"source": "files", **paths}).texts(None, 0) == ("a b\n", "a\n", "b\nb a\n")
    with_test = make_task("ptb", {"source": "files", **paths, "test_file": str(tmp_path / "x.txt")})
    assert with_test.texts(None, 0) == ("a b\n", "a\nb\nb a\n", "b b\n")
    with pytest.raises(TaskError, match=r"ptb option 'test_file' must be null with source '\w+' \(a path needs source 'files'\)"):
        make_task("ptb", {"test_file": "x.txt"})


def test_a_missing_valid_or_unhalvable_text_is_named(tmp_path: Path) -> None:
    (tmp_path / "ptb.test.txt").write_text(" a \n")
    with pytest.raises(TaskError, match=rf"(?s)ptb.train.txt missing in {tmp_path}: put .*ptb.test.txt"):
        make_task("ptb", {"source": "ptb", "download": False}).prepare(tmp_path, 0)
    (tmp_path / "ptb.valid.txt").write_text(" a b \n")
    with pytest.raises(TaskError, match=r"the ptb.test.txt text has 1 line\(s\); halving it"):
        make_task("ptb", {"source": "ptb", "download": False}).prepare(tmp_path, 0)


def test_a_dataset_without_a_test_split_is_refused_naming_prepare(tmp_path: Path) -> None:
    split = {"x": torch.ones(4, 3, 2), "target": torch.zeros(4, 1)}
    path = files.save_torch({"train": split, "valid": split}, tmp_path / "dataset.pt")
    with pytest.raises(ValueError, match=r"not a dataset that `rnnzoo prepare x` writes \(expected a dict with the keys train, valid, test"):
        files.load_torch(path, "dataset", "rnnzoo prepare x")
    files.save_torch({"train": split, "valid": split, "test": {"x": torch.ones(0, 3, 2), "target": torch.zeros(0, 1)}}, path)
    with pytest.raises(ValueError, match=r"split test has x \(0, 3, 2\)"):
        files.load_torch(path, "dataset", "rnnzoo prepare x")
    files.save_torch({"train": split, "valid": split, "test": split}, path)
    assert list(files.load_torch(path, "dataset", "rnnzoo prepare x")) == ["train", "valid", "test"]
