"""Writing stage outputs: a file or a whole folder appears complete or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline import files


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


def test_atomic_folder_replaces_the_folder_whole(tmp_path: Path) -> None:
    folder = tmp_path / "onnx"
    folder.mkdir()
    (folder / "sequence.onnx").write_text("old sequence")
    (folder / "step.onnx").write_text("old step")  # the new run writes no step graph
    with files.atomic_folder(folder) as tmp:
        assert tmp.parent == tmp_path and not list(tmp.iterdir())
        (tmp / "sequence.onnx").write_text("new sequence")
        assert (folder / "sequence.onnx").read_text() == "old sequence"  # nothing visible until the end
    assert {p.name: p.read_text() for p in folder.iterdir()} == {"sequence.onnx": "new sequence"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"], "no temporary or old folder is left"


def test_atomic_folder_keeps_the_old_folder_when_the_block_fails(tmp_path: Path) -> None:
    folder = tmp_path / "onnx"
    folder.mkdir()
    (folder / "sequence.onnx").write_text("old sequence")
    with pytest.raises(RuntimeError, match="export failed"), files.atomic_folder(folder) as tmp:
        (tmp / "sequence.onnx").write_text("new sequence")
        raise RuntimeError("export failed")
    assert {p.name: p.read_text() for p in folder.iterdir()} == {"sequence.onnx": "old sequence"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_atomic_folder_creates_a_missing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "exp" / "onnx"
    with files.atomic_folder(folder) as tmp:
        (tmp / "vector.onnx").write_text("graph")
    assert [p.name for p in folder.iterdir()] == ["vector.onnx"]
    umask = os.umask(0)
    os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask  # the usual mode, not mkdtemp's 0700


def test_atomic_folder_puts_the_old_folder_back_when_the_swap_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "onnx"
    folder.mkdir()
    (folder / "sequence.onnx").write_text("old sequence")
    real_replace = os.replace

    def swap_fails(source: os.PathLike, target: os.PathLike) -> None:
        if Path(target) == folder and Path(source).name.startswith(".onnx.") and (Path(source) / "sequence.onnx").read_text() == "new":
            raise OSError("rename failed")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", swap_fails)
    with pytest.raises(OSError, match="rename failed"), files.atomic_folder(folder) as tmp:
        (tmp / "sequence.onnx").write_text("new")
    assert {p.name: p.read_text() for p in folder.iterdir()} == {"sequence.onnx": "old sequence"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_atomic_folder_clears_what_a_killed_run_left(tmp_path: Path) -> None:
    folder = tmp_path / "onnx"
    leftover = tmp_path / ".onnx.abc123.tmp"
    leftover.mkdir()
    (leftover / "sequence.onnx").write_text("half")
    unrelated = tmp_path / ".other.abc123.tmp"
    unrelated.mkdir()
    with files.atomic_folder(folder) as tmp:
        (tmp / "sequence.onnx").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.abc123.tmp", "onnx"]
