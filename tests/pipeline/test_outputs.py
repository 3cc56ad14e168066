"""A stage's outputs appear together or not at all: a write that fails (disk full, read-only
folder) leaves the previous outputs as they were, no temporary files, and a named error."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from rnnzoo.pipeline import config, files, outputs
from rnnzoo.pipeline.stages.evaluate import evaluate
from rnnzoo.pipeline.stages.prepare import prepare
from rnnzoo.pipeline.stages.train import train


def _disk_full(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_staged_outputs_appear_together(tmp_path: Path) -> None:
    with outputs.together() as staged:
        staged.file(tmp_path / "a.json").write_text("a")
        folder = staged.folder(tmp_path / "plots")
        (folder / "p.png").write_text("p")
        assert not (tmp_path / "a.json").exists() and not (tmp_path / "plots").exists(), "nothing before the block ends"
    assert (tmp_path / "a.json").read_text() == "a" and (tmp_path / "plots" / "p.png").read_text() == "p"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "plots"]


def test_a_failed_write_keeps_the_previous_outputs(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("old a")
    (tmp_path / "b.json").write_text("old b")
    with pytest.raises(outputs.StageOutputError, match="No space left on device"), outputs.together() as staged:
        staged.file(tmp_path / "a.json").write_text("new a")
        _disk_full(staged.file(tmp_path / "b.json"))
    assert (tmp_path / "a.json").read_text() == "old a" and (tmp_path / "b.json").read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"], "no temporary file left"


def test_a_rename_failing_part_way_puts_back_what_was_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.json").write_text("old a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("old x")
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst) == tmp_path / "b" and ".staged" in str(src) and "previous" not in str(src):
            raise OSError(errno.EROFS, "Read-only file system")
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with (
        pytest.raises(outputs.StageOutputError, match=r"could not write .*b: Read-only file system"),
        outputs.together() as staged,
    ):
        staged.file(tmp_path / "a.json").write_text("new a")
        (staged.folder(tmp_path / "b") / "x").write_text("new x")
    assert (tmp_path / "a.json").read_text() == "old a"
    assert (tmp_path / "b" / "x").read_text() == "old x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b"]


def test_an_error_that_is_not_a_failed_write_passes_through_unchanged(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), outputs.together() as staged:
        staged.file(tmp_path / "a.json").write_text("a")
        (tmp_path / "missing" / "input").read_text()
    assert list(tmp_path.iterdir()) == []


def _fail_to_save(what: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save fails (disk full) for the model record or the checkpoint, and works for the rest."""
    real_save = torch.save
    key = {"model": "state_dict", "checkpoint": "optimizer"}[what]

    def save(obj: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, dict) and key in obj:
            _disk_full()
        real_save(obj, *args, **kwargs)

    monkeypatch.setattr("rnnzoo.pipeline.files.torch.save", save)


def _prepare(params: config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rnnzoo.pipeline.files.torch.save", _disk_full)
    prepare(params, "add-janet")


def _train(params: config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_to_save("model", monkeypatch)
    train(params, "add-janet", progress=False)


def _checkpoint(params: config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_to_save("checkpoint", monkeypatch)
    train(params, "add-janet", progress=False)


def _evaluate(params: config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    train(params, "add-janet", progress=False)
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", _disk_full)  # a plot's write fails
    evaluate(params, "add-janet")


def _bench(params: config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnzoo.pipeline.stages.bench import bench
    from rnnzoo.pipeline.stages.export import export

    train(params, "add-janet", progress=False)
    export(params, "add-janet")
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", _disk_full)  # the plot's write fails, the last of four
    bench(params, "add-janet")


# Each stage with more than one output, and the outputs that must appear together.
STAGES = {
    "prepare": (_prepare, ["data/add-janet/dataset.pt"]),
    "train": (_train, ["models/add-janet/model.pt", "reports/add-janet/train_history.json"]),
    "train, checkpoint": (_checkpoint, ["models/add-janet/checkpoint/last.pt", "models/add-janet/model.pt"]),
    "evaluate": (_evaluate, ["reports/add-janet/metrics.json", "reports/add-janet/plots"]),
    "bench": (_bench, [f"reports/add-janet/{name}" for name in ("bench.json", "bench.md", "bench_latency", "bench_plots")]),
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_whose_write_fails_leaves_none_of_its_outputs(stage: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, made = STAGES[stage]
    params = config.load(workdir / "params.yaml")
    if stage != "prepare":
        prepare(params, "add-janet")
    with pytest.raises(outputs.StageOutputError, match="No space left on device; the previous outputs are unchanged"):
        run(params, monkeypatch)
    assert [path for path in made if (workdir / path).exists()] == []
    assert not list(workdir.rglob("*.staged")) and not list(workdir.rglob(".*.tmp")), "no temporary file left"


def test_a_failed_write_names_the_output_not_its_hidden_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: Path, data: Any) -> None:  # as a real full disk: the write fails, no file named
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(outputs.StageOutputError) as caught, outputs.together() as staged:
        monkeypatch.setattr(Path, "write_bytes", full)
        files.save_torch({"a": 1}, staged.file(tmp_path / "model.pt"))
    assert str(caught.value) == f"could not write {tmp_path / 'model.pt'}: No space left on device; the previous outputs are unchanged"
    monkeypatch.undo()
    with (
        pytest.raises(outputs.StageOutputError, match=rf"could not write {tmp_path / 'm.json'}: Read-only file system"),
        outputs.together() as staged,
    ):
        staged.file(tmp_path / "a.json").write_text("a")
        raise OSError(errno.EROFS, "Read-only file system", str(staged.file(tmp_path / "m.json")))
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_a_folder_must_go_is_a_named_error(tmp_path: Path) -> None:
    (tmp_path / "reports").write_text("a file, not a folder")
    with (
        pytest.raises(outputs.StageOutputError, match="could not write .*reports/x/metrics.json"),
        outputs.together() as staged,
    ):
        staged.file(tmp_path / "reports" / "x" / "metrics.json").write_text("{}")


def test_an_interrupt_between_renames_puts_back_what_was_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model.pt").write_text("old model")
    (tmp_path / "history.json").write_text("old history")
    real_replace, calls = os.replace, {"n": 0}

    def replace(src: Any, dst: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # the first output is in place, the second not yet
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), outputs.together() as staged:
        staged.file(tmp_path / "model.pt").write_text("new model")
        staged.file(tmp_path / "history.json").write_text("new history")
    assert (tmp_path / "model.pt").read_text() == "old model" and (tmp_path / "history.json").read_text() == "old history"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "model.pt"]


def test_temporaries_of_a_killed_write_are_cleared_by_the_next(tmp_path: Path) -> None:
    killed = [tmp_path / ".model.pt.x1.staged", tmp_path / "..model.pt.x2.staged.y.tmp"]
    for path in killed:
        path.write_text("left by a killed run")
    with outputs.together() as staged:
        staged.file(tmp_path / "model.pt").write_text("model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
