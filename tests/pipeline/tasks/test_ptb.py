"""Language modelling: tokens and vocabulary, <unk>, consecutive truncated-BPTT segments, the
unigram baseline, and text read from files (written here) or the embedded toy corpus."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from rnnzoo.pipeline.tasks import make_task
from rnnzoo.pipeline.tasks.base import Task, TaskError
from rnnzoo.pipeline.tasks.ptb import EOS, UNK, tokenize


def files_task(tmp_path: Path, train: str, valid: str, test: str = "a b\n", **options: object) -> Task:
    (tmp_path / "train.txt").write_text(train, encoding="utf-8")
    (tmp_path / "valid.txt").write_text(valid, encoding="utf-8")
    (tmp_path / "test.txt").write_text(test, encoding="utf-8")
    paths = {"train_file": str(tmp_path / "train.txt"), "valid_file": str(tmp_path / "valid.txt"), "test_file": str(tmp_path / "test.txt")}
    return make_task("ptb", {"source": "files", **paths, **options})


def test_tokenize_words_and_characters_with_eos() -> None:
    assert tokenize(" the cat \nsat\n", "word") == ["the", "cat", EOS, "sat", EOS]
    assert tokenize("ab c\n", "char") == ["a", "b", " ", "c", EOS]


def test_unseen_valid_tokens_map_to_unk(tmp_path: Path) -> None:
    task = files_task(tmp_path, "a b c\nc b a\n", "a d b\n")
    splits = task.prepare(None, 0)
    vocabulary = task.vocabulary(None, 0)
    assert vocabulary == sorted(["a", "b", "c", EOS, UNK])
    decoded = [vocabulary[i] for i in [*splits["valid"]["x"].tolist(), splits["valid"]["target"][-1].item()]]
    assert decoded == ["a", UNK, "b", EOS]
    assert int(splits["train"]["vocab_size"]) == len(vocabulary) == task.spec(splits).input_size


def test_target_is_the_next_token(tmp_path: Path) -> None:
    splits = files_task(tmp_path, "a b c d e\n" * 3, "a b\n").prepare(None, 0)
    assert torch.equal(splits["train"]["x"][1:], splits["train"]["target"][:-1])


def test_batches_are_consecutive_segments_of_parallel_streams() -> None:
    task = make_task("ptb", {"sentences": 100, "bptt": 9})
    split = task.prepare(None, 0)["train"]
    batch_size = 4
    segments = list(task.batches(split, batch_size, torch.Generator().manual_seed(0)))  # never shuffled
    steps = split["x"].numel() // batch_size
    assert len(segments) == math.ceil(steps / 9)
    assert all(s.x.shape == (batch_size, 9) for s in segments[:-1]) and segments[-1].x.shape[1] <= 9
    for previous, following in itertools.pairwise(segments):
        assert torch.equal(following.x[:, 0], previous.target[:, -1])  # each stream picks up where it stopped
    stream = torch.cat([s.x for s in segments], dim=1)  # (B, steps)
    assert torch.equal(stream.flatten(), split["x"][: batch_size * steps])  # row b is the b-th slice of the text
    again = list(task.batches(split, batch_size))
    assert all(torch.equal(a.x, b.x) for a, b in zip(segments, again))


def test_too_short_a_stream_for_the_batch_size_is_named(tmp_path: Path) -> None:
    task = files_task(tmp_path, "a b\n", "a\n")
    split = task.prepare(None, 0)["valid"]
    with pytest.raises(TaskError, match="cannot feed batch_size 8"):
        next(task.batches(split, 8))


def test_unigram_baseline(tmp_path: Path) -> None:
    task = files_task(tmp_path, "a a a b\n", "a a\n")
    splits = task.prepare(None, 0)
    spec = task.spec(splits)
    # Train targets a a b <eos>: add-one counts <eos> 2, <unk> 1, a 3, b 2, of 8 in all.
    expected = -(math.log(3 / 8) + math.log(2 / 8)) / 2  # valid targets: a, <eos>
    assert spec.baseline_loss == pytest.approx(expected)
    assert spec.head == "language_model" and spec.carries_state and spec.output_size == spec.input_size


def test_embedded_corpus_is_learnable_and_deterministic() -> None:
    task = make_task("ptb", {})
    splits = task.prepare(None, 0)
    vocabulary = task.vocabulary(None, 0)
    assert UNK in vocabulary and len(vocabulary) == int(splits["train"]["vocab_size"])
    assert (splits["valid"]["x"] != vocabulary.index(UNK)).all()  # the grammar's words are all in train
    # The verb agrees with the noun, so a bigram model beats the unigram baseline by a margin.
    x, target = splits["train"]["x"], splits["train"]["target"]
    size = len(vocabulary)
    counts = torch.ones(size, size).index_put_((x, target), torch.ones_like(x, dtype=torch.float), accumulate=True)
    bigram = -(counts / counts.sum(1, keepdim=True)).log()[splits["valid"]["x"], splits["valid"]["target"]].mean()
    assert float(bigram) < task.spec(splits).baseline_loss - 1.0


def test_char_level_reads_characters(tmp_path: Path) -> None:
    task = files_task(tmp_path, "ab ba\n", "abc\n", level="char")
    assert task.vocabulary(None, 0) == sorted([" ", "a", "b", EOS, UNK])


def test_ptb_source_without_files_says_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=rf"(?s)ptb.train.txt missing in {tmp_path}: put ptb.train.txt and ptb.valid.txt there"):
        make_task("ptb", {"source": "ptb", "download": False}).prepare(tmp_path, 0)


def test_ptb_source_reads_the_standard_names(tmp_path: Path) -> None:
    (tmp_path / "ptb.train.txt").write_text(" the cat \n the dog \n")
    (tmp_path / "ptb.valid.txt").write_text(" the bird \n")
    (tmp_path / "ptb.test.txt").write_text(" the fish \n")
    task = make_task("ptb", {"source": "ptb", "download": False})
    assert task.vocabulary(tmp_path, 0) == sorted(["the", "cat", "dog", EOS, UNK])
    assert task.prepare(tmp_path, 0)["valid"]["x"].numel() == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"level": "byte"}, r"ptb option 'level' must be one of 'word', 'char', got 'byte'"),
        ({"source": "wiki"}, r"ptb option 'source' must be one of 'embedded', 'ptb', 'files', got 'wiki'"),
        ({"bptt": 0}, r"ptb option 'bptt' must be >= 1, got 0"),
        ({"source": "files", "train_file": "t.txt"}, r"ptb option 'valid_file' must be a path with source 'files', got None"),
        ({"train_file": "t.txt"}, r"ptb option 'train_file' must be null with source 'embedded' \(a path needs source 'files'\), got 't.txt'"),
    ],
)
def test_bad_ptb_options_name_the_value(options: dict, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        make_task("ptb", options)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    task = make_task("ptb", {"source": "files", "train_file": str(tmp_path / "nope.txt"), "valid_file": "v.txt"})
    with pytest.raises(TaskError, match=r"ptb option 'train_file': cannot read .*nope\.txt"):
        task.prepare(None, 0)
