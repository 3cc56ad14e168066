"""Every command in README.md's code blocks, run as written in a temp copy of the project.

The copy holds the real ``params.yaml`` shrunk to a few steps and examples (the experiments keep
their names, so the README's commands find them) and links the project's ``.venv``, so ``source
.venv/bin/activate`` and ``make`` find what ``make`` installed (rnnzoo installed from this
checkout, as a user's). ``PLAN`` says, for each command, how it runs: in the default suite, in
the slow one (``-m slow``), or not at all with the reason; a README command missing from it, or
one it names that the README dropped, fails the first test, so the README cannot drift from what
is tested. What a test changes in a command is declared in ``PLAN`` (a free port for a server, a
folder of test-made files for a placeholder path)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.project_copy import ROOT, copy_project
from tests.readme_commands import Block, blocks

README = ROOT / "README.md"
BIN = Path(sys.executable).parent
PROJECT_FILES = ("rnnzoo", "cells", "pipeline", "profiles", "dvc.yaml", "MLproject", "conda.yaml", "pyproject.toml", "Makefile", "README.md")


@dataclass(frozen=True)
class How:
    """How the tests run one README command: ``default``, ``slow`` or ``not run`` (``why`` says why)."""

    mode: str
    why: str = ""


DEFAULT = How("default")
PLAN: dict[str, How] = {
    # Set up
    "make run": How("slow", "the whole default pipeline through DVC (about 3 minutes at the tests' sizes)"),
    "make test": How("not run", "it is this test suite: CI runs it (.ci/run)"),
    ".venv/bin/mkdocs build --strict": How("not run", "tests/test_docs.py builds the same site with --strict, into a temp folder"),
    # The pipeline
    "source .venv/bin/activate": DEFAULT,
    "rnnzoo --version; rnnzoo --help": DEFAULT,
    "rnnzoo tasks": DEFAULT,
    "rnnzoo run adding-janet --set experiments.adding-janet.train.lr=0.003": DEFAULT,
    "rnnzoo prepare adding-janet": DEFAULT,
    "rnnzoo bench cells": How("slow", "times every cell at the issue's shapes: minutes"),
    "rnnzoo train adding-lstm --resume": How(
        "slow", "after a training of adding-lstm stopped at step 2 (the hidden --stop-after): three processes, 20 s; tests/pipeline/test_resume.py holds resume to an uninterrupted run by default"
    ),
    "dvc repro": How("slow", "every stage of every experiment: about 3 minutes at the tests' sizes"),
    "dvc exp run -S 'experiments.adding-janet.train.lr=0.003'": How("slow", "after dvc repro"),
    "dvc exp run --queue -n lr -S 'experiments.adding-janet.train.lr=0.001,0.01'": How("slow", "after dvc repro, committed"),
    "dvc exp run --run-all -j 2": How("slow", "the queued grid (tests/pipeline/test_dvc_and_mlflow_run.py checks a 2 x 2 grid's results)"),
    "dvc exp show --drop '.*' --keep 'Experiment|.*adding-janet/metrics.json:test.loss|.*adding-janet.train.lr'": How(
        "slow", "after the grid: its rows must show their test loss"
    ),
    "dvc metrics show; dvc metrics diff; dvc plots show": How("slow", "after dvc repro"),
    "rnnzoo run --params profiles/pmnist_janet.yaml --set prepare.data_dir=/path/to/mnist": How(
        "slow", "/path/to/mnist is a placeholder: a folder of test-made MNIST IDX files; one training step (1.8 s) and a batch-1 bench"
    ),
    # MLflow
    "export MLFLOW_DISABLE_TELEMETRY=true": DEFAULT,
    "mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db": How(
        "default", "a server that runs until stopped: started on a free port, asked for its page, stopped"
    ),
    "mlflow run . --env-manager local -P experiment=adding-janet": How("slow", "every stage of adding-janet under mlflow run: 30-75 s"),
    # Reproducing the papers' claims
    "rnnzoo reproduce --list": DEFAULT,
    "rnnzoo reproduce --scale smoke": How("slow", "every claim at smoke scale: 64 s (tests/pipeline/test_reproduce.py runs four by default)"),
    "rnnzoo reproduce --scale cpu --data ../shared/data": How(
        "not run", "20-40 minutes a claim on real MNIST and PTB files, which tests must not need; its arguments are parsed"
    ),
    "rnnzoo reproduce rhn_depth --scale paper --data DATA": How("not run", "the paper's sizes are for a GPU (days); DATA is a placeholder; its arguments are parsed"),
    # Export to ONNX: mlflow models serve (the block runs as one script, on a free port)
    "mlflow models serve -m models:/rnnzoo-janet-adding@onnx --env-manager local --port 5001 &": How(
        "slow", "the whole block, after rnnzoo run adding-janet registered the model: 20 s"
    ),
    "until curl -s localhost:5001/ping >/dev/null; do kill -0 $! || break; sleep 1; done": How("slow", "with the block"),
    "kill %1": How("default", "ends both server blocks (with the mlflow models serve block, slow)"),
    # Serving (the block runs as one script, on a free port)
    "rnnzoo serve adding-janet --port 8000 &": How("default", "after rnnzoo run adding-janet exported the model, in the venv (source .venv/bin/activate first)"),
    "until curl -s localhost:8000/health >/dev/null; do kill -0 $! || break; sleep 1; done": DEFAULT,
    "curl -s localhost:8000/metadata": DEFAULT,
    "id=$(curl -s -X POST localhost:8000/sessions | python -c 'import json,sys; print(json.load(sys.stdin)[\"session_id\"])')": DEFAULT,
    "curl -s localhost:8000/sessions/$id/steps -H 'Content-Type: application/json' -d '{\"steps\": [[0.3, 1], [0.9, 0]]}'": DEFAULT,
    "curl -s localhost:8000/sessions/$id/steps -H 'Content-Type: application/json' -d '{\"steps\": [[0.5, 1]]}'": DEFAULT,
    "curl -s -X DELETE localhost:8000/sessions/$id": DEFAULT,
    # Scale
    "rnnzoo train adding-janet --nproc-per-node 2": How(
        "slow", "the whole block: 2-3 minutes (tests/pipeline/test_distributed.py runs rnnzoo train --nproc-per-node 2 by default)"
    ),
    "torchrun --standalone --nproc-per-node 2 -m rnnzoo.pipeline.stages.train adding-janet": How("slow", "with the block"),
    "rnnzoo train adding-janet --nproc-per-node 8 --nnodes 2 --node-rank 0 --rdzv-endpoint node0:29400": How(
        "not run", "needs a second machine (node0 is a placeholder); tests/pipeline/test_distributed.py checks the torchrun command line it builds"
    ),
    "rnnzoo export adding-janet --triton triton-models": How(
        "slow", "with the block (tests/pipeline/test_export.py writes and checks the repository of every cell and head by default)"
    ),
}
# Commands too long to name in full above: matched by their start.
PLAN_BY_START: dict[str, How] = {
    "python - <<'PY'": How("slow", "with the mlflow models serve block"),
    "curl -s localhost:8000/predict ": DEFAULT,
}


def _readme_blocks() -> list[Block]:
    return blocks(README)


def _shell_blocks() -> list[Block]:
    return [block for block in _readme_blocks() if block.language == "bash"]


def _how(command: str) -> How | None:
    if command in PLAN:
        return PLAN[command]
    return next((how for start, how in PLAN_BY_START.items() if command.startswith(start)), None)


def _block(heading: str) -> Block:
    return next(block for block in _shell_blocks() if block.heading.startswith(heading))


def _command(block: Block, start: str) -> str:
    """The command of ``block`` that begins with ``start``."""
    return next(command for command in block.commands if command.startswith(start))


# --- the plan covers the README ------------------------------------------------------------------


def test_every_readme_command_is_planned_and_every_planned_command_is_in_the_readme():
    commands = [command for block in _shell_blocks() for command in block.commands]
    unplanned = [command for command in commands if _how(command) is None]
    assert not unplanned, f"README commands with no entry in tests/test_readme.py's PLAN: {unplanned}"
    missing = [command for command in PLAN if command not in commands]
    missing += [start for start in PLAN_BY_START if not any(command.startswith(start) for command in commands)]
    assert not missing, f"PLAN names commands the README no longer has: {missing}"
    assert all(how.mode in ("default", "slow", "not run") for how in (*PLAN.values(), *PLAN_BY_START.values()))
    assert all(how.why for how in (*PLAN.values(), *PLAN_BY_START.values()) if how.mode == "not run")
    assert [block.language for block in _readme_blocks()].count("python") == 1, "a new Python block needs a test here"


# --- the project copy ------------------------------------------------------------------------------


def shrink(params: dict) -> dict:
    """The README's params.yaml at test size: a few steps, small splits and widths, a short bench."""
    params["train"].update(steps=4, batch_size=8, checkpoint_every=2, log_every=1, eval_every=2)
    params["bench"].update(batch_sizes=[1, 2], repeats=1, warmup=1, threads=1)
    for experiment in params["experiments"].values():
        experiment["hidden_size"] = 8
        experiment["train"]["steps"] = 4
        options = experiment["task_options"]
        if experiment["task"] in ("seq_mnist", "mnist_vector"):
            options["limit"] = 200
        else:
            options.update(train_size=32, valid_size=16, test_size=16)
        if "depth" in experiment["cell_options"]:
            experiment["cell_options"]["depth"] = 2
    return params


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Project:
    path: Path
    env: dict[str, str]

    def sh(self, script: str, timeout: float = 600) -> str:
        """Run ``script`` in bash in the project; fail the test with its output unless it succeeds.

        A server the script started in the background is stopped however the script ends (the
        trap), and on a timeout the whole process group is."""
        trap = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
        process = subprocess.Popen(
            ["bash", "-c", trap + "set -eo pipefail\n" + script],
            cwd=self.path, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        assert process.returncode == 0, f"{script}\n--- exit {process.returncode}\n{stdout[-3000:]}\n{stderr[-3000:]}"
        return stdout

    def ensure_adding_janet(self) -> None:
        """The README's own `rnnzoo run adding-janet ...`, once: the serving blocks read its model."""
        if not (self.path / "models" / "adding-janet" / "onnx" / "sequence.onnx").is_file():
            run = next(command for command in _block("The pipeline").commands if command.startswith("rnnzoo run adding-janet"))
            self.sh("source .venv/bin/activate\n" + run)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A git + DVC repository holding a copy of the project, the params shrunk, ``.venv`` linked."""
    if not (ROOT / ".venv" / "bin" / "activate").is_file() or not (BIN / "dvc").is_file():
        pytest.skip("the README's commands need the .venv that `make` installs, with dvc in it")
    path = copy_project(tmp_path_factory.mktemp("readme") / "project", PROJECT_FILES)
    (path / "params.yaml").write_text(yaml.safe_dump(shrink(yaml.safe_load((ROOT / "params.yaml").read_text())), sort_keys=False))
    (path / ".venv").symlink_to(ROOT / ".venv")
    for stamp in (ROOT / ".venv").glob(".installed-*"):  # make reinstalls when pyproject.toml is newer than its stamp
        os.utime(path / "pyproject.toml", (stamp.stat().st_mtime - 1,) * 2)
    (path / ".gitignore").write_text("/.venv\n/data/\n/models/\n/reports/\n/mlflow.db\n/mlruns/\n/mlartifacts/\n")
    env = {
        **os.environ, "DVC_NO_ANALYTICS": "1", "COLUMNS": "200",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }
    # As a user's shell: MLflow's default store (the project's mlflow.db), no run or experiment chosen.
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "VIRTUAL_ENV"):
        env.pop(variable, None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != BIN)  # `source` puts it back
    project = Project(path, env)
    project.sh(f"git init -q && {BIN / 'dvc'} init -q && git add -A && git commit -qm init")
    return project


# --- the blocks ------------------------------------------------------------------------------------


def test_the_python_block_runs_as_written(project: Project):
    (block,) = [block for block in _readme_blocks() if block.language == "python"]
    # Beside the project, not in it: a script's folder comes first on sys.path, and the copy's
    # `rnnzoo` would shadow the installed one (and build its own C++ loops, 30 s); for the same
    # reason the copy's folder is not named rnnzoo.
    # With this environment's python (the real path: through the copy's .venv link torch's headers
    # have another path, and the C++ loops would build again for it).
    script = project.path.parent / "readme_block.py"
    script.write_text(block.commands[0])
    project.sh(f"{sys.executable} {script}")


def test_the_pipeline_block_runs_as_written(project: Project):
    block = _block("The pipeline")
    assert block.commands[0] == "source .venv/bin/activate"
    out = project.sh("\n".join(command for command in block.commands if _how(command).mode == "default"))
    assert "rnnzoo 0." in out and "Usage" in out and "seq_mnist" in out
    written = ("reports/adding-janet/metrics.json", "models/adding-janet/onnx/sequence.onnx", "reports/adding-janet/bench.json")
    assert all((project.path / path).is_file() for path in written), "rnnzoo run: every stage's outputs"
    assert "prepared data/adding-janet/dataset.pt" in out


@pytest.mark.slow
def test_the_scale_block_runs_as_written(project: Project):
    block = _block("Scale")
    out = project.sh("\n".join(command for command in block.commands if _how(command).mode != "not run"), timeout=900)
    assert out.count("trained models/adding-janet/model.pt") == 2, "rank 0 alone reports, once a job"
    for graph in ("sequence", "step"):
        assert (project.path / "triton-models" / f"adding-janet-{graph}" / "config.pbtxt").is_file()
    assert "triton model triton-models/adding-janet-step/1/model.onnx" in out


@pytest.mark.slow
def test_the_pipeline_blocks_long_commands_run_as_written(project: Project):
    block = _block("The pipeline")
    mnist = project.path / "tiny_mnist"
    _write_mnist(mnist)
    script = [block.commands[0]]
    for command in block.commands[1:]:
        if _how(command).mode != "slow":
            continue
        if command == "rnnzoo train adding-lstm --resume":  # what --resume continues
            script.append("rnnzoo prepare adding-lstm && rnnzoo train adding-lstm --stop-after 2")
        if "/path/to/mnist" in command:
            command = command.replace("/path/to/mnist", str(mnist)) + " --set train.steps=1 --set bench.repeats=1 --set 'bench.batch_sizes=[1]'"
        script.append(command)
    out = project.sh("\n".join(script), timeout=1800)
    assert "janet" in out and "bench_cells_cpu.md" in out
    assert '"step": 4' in (project.path / "reports" / "adding-lstm" / "train_history.json").read_text(), "resumed to the last step"
    assert (project.path / "reports" / "bench_cells_cpu.md").is_file()


def _write_mnist(folder: Path) -> None:
    """MNIST's four IDX files (gzip), 60 random images each: what the pMNIST profile's prepare reads."""
    from tests.pipeline.tasks.fake_mnist import write_mnist_part

    folder.mkdir(exist_ok=True)
    for seed, part in enumerate(("train", "t10k")):
        write_mnist_part(folder, part, count=60, seed=seed)


@pytest.mark.slow
def test_make_run_runs_as_written(project: Project):
    # The copy's .venv is the project's own: a make that would reinstall (no stamp for this ORT,
    # a venv made without make) would install into it from a temp folder.
    if "pip install" in project.sh("make -n run"):
        pytest.skip("make would reinstall the project's .venv (its stamp is missing or older); run `make` in the project first")
    out = project.sh(_block("Set up").commands[0], timeout=1800)
    assert "bench_onnxruntime.md" in out and (project.path / "reports" / "bench_onnxruntime.md").is_file()


def test_the_mlflow_ui_command_serves_the_runs(project: Project):
    block = _block("MLflow")
    port = free_port()
    ui = _command(block, "mlflow ui") + f" --port {port} --host 127.0.0.1"
    project.sh(
        textwrap.dedent(f"""\
            {_command(block, "source")}
            {_command(block, "export")}
            {ui} >ui.log 2>&1 &
            for _ in $(seq 60); do curl -sf localhost:{port} >/dev/null && break; sleep 1; done
            curl -sf localhost:{port} | grep -qi mlflow
            kill %1
            """),
        timeout=120,
    )


@pytest.mark.slow
def test_mlflow_run_runs_as_written(project: Project):
    block = _block("MLflow")
    project.sh("\n".join(_command(block, start) for start in ("source", "export", "mlflow run")), timeout=600)


def test_the_reproduce_list_runs_and_the_long_scales_parse(project: Project):
    block = _block("Reproducing")
    out = project.sh("source .venv/bin/activate\n" + block.commands[0])
    assert "rhn_depth" in out and "janet_adding" in out
    from typer.main import get_command

    from rnnzoo.pipeline.cli import app

    command = get_command(app)
    for line in block.commands[2:]:
        args = line.split()[1:]  # without `rnnzoo`
        assert _how(line).mode == "not run"
        with command.make_context("rnnzoo", list(args)) as context:  # parses, raises on an unknown option or value
            sub = command.get_command(context, args[0])
            sub.make_context(args[0], args[1:], parent=context)


@pytest.mark.slow
def test_the_reproduce_smoke_scale_runs_as_written(project: Project):
    project.sh("source .venv/bin/activate\n" + _block("Reproducing").commands[1], timeout=900)
    assert (project.path / "reports" / "reproduction.md").is_file()


def _server_script(block: Block, written_port: int) -> str:
    """The block as one script, on a free port instead of ``written_port`` (which may be taken)."""
    port = free_port()
    return "\n".join(command.replace(f"localhost:{written_port}", f"localhost:{port}").replace(f"--port {written_port}", f"--port {port}") for command in block.commands)


def test_the_serve_block_runs_as_written(project: Project):
    project.ensure_adding_janet()
    out = project.sh("source .venv/bin/activate\n" + _server_script(_block("Serving"), 8000), timeout=180)
    assert '"cell":"janet"' in out.replace(" ", "") and '"outputs"' in out, out


@pytest.mark.slow
def test_the_mlflow_models_serve_block_runs_as_written(project: Project):
    project.ensure_adding_janet()
    out = project.sh(_server_script(_block("Export to ONNX"), 5001), timeout=300)
    assert out.strip().splitlines()[-1].startswith("[["), out  # the prediction, after the server's own log lines
