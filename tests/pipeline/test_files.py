"""Writing stage outputs: a file or a whole folder appears complete or not at all."""

from __future__ import annotations

import io
import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from rnnzoo.pipeline import files


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "out" / "metrics.json"
    files.write_json({"loss": 1.0}, path)

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text('{"loss": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(path, half_then_fail)
    assert path.read_text() == '{\n  "loss": 1.0\n}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


def _mutations(good: bytes, count: int, seed: int = 0) -> list[bytes]:
    """``count`` damaged copies of ``good``: bytes overwritten, the file cut, a span spliced in."""
    rng = random.Random(seed)
    damaged = []
    for _ in range(count):
        data = bytearray(good)
        kind = rng.randrange(3)
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1:
            data = data[: rng.randrange(len(data))]
        else:
            start = rng.randrange(len(data))
            data[start : start + rng.randint(1, 40)] = rng.randbytes(rng.randint(1, 40))
        damaged.append(bytes(data))
    return damaged


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_load_torch_turns_any_damage_into_a_value_error_naming_the_file(zip_format: bool, tmp_path: Path) -> None:
    """Whatever torch.load raises on a damaged file, the caller gets one ValueError naming the file
    and the command that remakes it, or the file still loads as a dataset."""
    buffer = io.BytesIO()
    held_out = {"x": torch.ones(2, 3, 2), "target": torch.zeros(2, 1)}
    splits = {"train": {"x": torch.ones(4, 3, 2), "target": torch.zeros(4, 1)}, "valid": held_out, "test": held_out}
    torch.save(splits, buffer, _use_new_zipfile_serialization=zip_format)
    path = tmp_path / "dataset.pt"
    for data in _mutations(buffer.getvalue(), 300):
        path.write_bytes(data)
        try:
            loaded = files.load_torch(path, "dataset", "rnnzoo prepare x")
        except ValueError as error:
            assert f"{path} is not a dataset that `rnnzoo prepare x` writes" in str(error)
            assert "\n" not in str(error) and len(str(error)) < 400
        else:
            assert set(loaded) >= {"train", "valid", "test"}


def test_load_torch_names_a_missing_file_and_the_stage_that_makes_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model .*model\.pt does not exist: run `rnnzoo train x` first"):
        files.load_torch(tmp_path / "model.pt", "model", "rnnzoo train x")


def test_load_torch_never_runs_code_from_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=2))
    with pytest.raises(ValueError, match="unsupported GLOBAL"):
        files.load_torch(path, "model", "rnnzoo train x")
    assert not marker.exists()
