"""Data-parallel training on torchrun (gloo, 2 processes on this machine): the same global batch on
2 ranks trains what 1 process trains; resume under DDP equals an uninterrupted DDP run; a rank
killed stops the job with a message and no model; and the pieces in-process (the split of a batch
and the loss weights, the torchrun command line)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from re import escape as re_escape
from typing import Any

import mlflow
import pytest
import torch

from rnnzoo.pipeline import config, distributed, files, objectives
from rnnzoo.pipeline.config import ConfigError
from rnnzoo.pipeline.stages.prepare import prepare
from rnnzoo.pipeline.stages.train import train
from rnnzoo.pipeline.tasks import Batch
from rnnzoo.pipeline.tasks.base import IGNORE_INDEX, TaskSpec
from tests.pipeline.conftest import interruptible_project

RNNZOO = str(Path(sys.executable).parent / "rnnzoo")
TIMING = {"train.steps_per_second"}

EXPERIMENTS: dict[str, dict[str, Any]] = {
    # Validation on rank 0 and the best model kept; 64 examples in batches of 16, shuffled each epoch.
    "janet-adding": {
        "cell": "janet", "task": "adding", "hidden_size": 8, "cell_options": {"max_timescale": 6},
        "task_options": {"length": 6, "train_size": 64, "valid_size": 32}, "model_options": {}, "train": {"eval_every": 4},
    },
    # A language model: each rank carries the state of its own rows of the stream; IndRNN projects
    # |u| onto its bound after every update, on every rank.
    "indrnn-ptb": {
        "cell": "indrnn", "task": "ptb", "hidden_size": 8, "cell_options": {}, "task_options": {"bptt": 5, "sentences": 200},
        "model_options": {}, "train": {"lr": 0.05},
    },
}
# 1 process and 2 differ only in rounding: one process sums the batch's 16 per-example losses in one
# mean, two sum 8 each and all-reduce the halves (float32: about 1e-7 relative a step, which Adam's
# 13 updates carry into the weights). Measured: at most 2.4e-7 (indrnn-ptb), 6e-8 (janet-adding).
# Over hundreds of steps such differences can grow (README, "Scale"): 13 steps keep them small.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def _project(root: Path, monkeypatch: pytest.MonkeyPatch) -> config.Config:
    return interruptible_project(root, EXPERIMENTS, monkeypatch)


def _torchrun(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [RNNZOO, "train", *EXPERIMENTS, "--nproc-per-node", "2", *args], cwd=root, env=os.environ.copy(),
        capture_output=True, text=True, timeout=300, check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _records(name: str) -> dict[str, Any]:
    """What a training run leaves: weights, histories and its MLflow run (timing fields aside)."""
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.`rnnzoo.experiment` = '{name}'", output_format="list")
    client = mlflow.MlflowClient()
    metrics = {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics if key not in TIMING
    }
    history = [{k: v for k, v in r.items() if k != "steps_per_second"} for r in json.loads((files.reports_dir(name) / "train_history.json").read_text())]
    valid = json.loads((files.reports_dir(name) / "valid_history.json").read_text())
    weights = torch.load(files.model_path(name), weights_only=True)["state_dict"]
    return {"metrics": metrics, "history": history, "valid": valid, "weights": weights, "tags": run.data.tags}


def _close(a: Any, b: Any) -> bool:
    return bool(torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), **TOLERANCE))


@pytest.mark.slow  # 70-85 s (three 2-rank jobs): CI runs it (make test-long) after the default run
def test_two_ranks_train_what_one_process_trains_and_resume_under_ddp_equals_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = _project(tmp_path / "one", monkeypatch)
    for name in EXPERIMENTS:
        train(one, name, progress=False)
    single = {name: _records(name) for name in EXPERIMENTS}

    _project(tmp_path / "ddp", monkeypatch)
    printed = _torchrun(tmp_path / "ddp").stdout
    assert printed.count("trained ") == len(EXPERIMENTS), "rank 0 alone reports"
    ddp = {name: _records(name) for name in EXPERIMENTS}

    for name in EXPERIMENTS:
        assert ddp[name]["tags"]["rnnzoo.world_size"] == "2" and single[name]["tags"]["rnnzoo.world_size"] == "1"
        for key, value in single[name]["weights"].items():
            assert torch.allclose(ddp[name]["weights"][key], value, **TOLERANCE), (name, key, (ddp[name]["weights"][key] - value).abs().max())
        # One record a step, written once (by rank 0), each the global batch's figure.
        assert ddp[name]["metrics"].keys() == single[name]["metrics"].keys()
        for key, rows in single[name]["metrics"].items():
            assert [step for step, _ in ddp[name]["metrics"][key]] == [step for step, _ in rows], key
            assert _close([v for _, v in ddp[name]["metrics"][key]], [v for _, v in rows]), key
        assert [r["step"] for r in ddp[name]["valid"]] == [r["step"] for r in single[name]["valid"]]
    assert [r["step"] for r in ddp["janet-adding"]["valid"]] == [4, 8, 12, 13]

    _project(tmp_path / "resumed", monkeypatch)
    _torchrun(tmp_path / "resumed", "--stop-after", "7")  # mid logging window (6..9), after the checkpoint at 5
    held = torch.load(files.checkpoint_path("indrnn-ptb"), weights_only=True)
    assert held["step"] == 7 and len(held["ranks"]) == 2 and held["carries_state"]
    assert not torch.equal(held["ranks"][0]["carried"][0], held["ranks"][1]["carried"][0]), "each rank's own rows"
    assert not torch.equal(held["ranks"][0]["cpu_rng"], held["ranks"][1]["cpu_rng"])
    _torchrun(tmp_path / "resumed", "--resume")
    for name in EXPERIMENTS:
        resumed = _records(name)
        assert resumed["history"] == ddp[name]["history"] and resumed["valid"] == ddp[name]["valid"]
        assert resumed["metrics"] == ddp[name]["metrics"]
        for key, value in ddp[name]["weights"].items():
            assert torch.equal(resumed["weights"][key], value), (name, key)


def test_resume_with_another_number_of_ranks_is_refused_naming_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = _project(tmp_path / "p", monkeypatch)
    train(loaded, "janet-adding", stop_after=5, progress=False)
    _as_rank_0_of_2(monkeypatch)
    with pytest.raises(ValueError, match=r"was written by 1 rank\(s\), and this run has 2: resume with --nproc-per-node \(times --nnodes\) 1"):
        train(loaded, "janet-adding", resume=True, progress=False)


def _as_rank_0_of_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """train() as rank 0 of 2 sees it, without a process group (what is refused comes before any collective)."""
    monkeypatch.setattr(distributed.World, "from_env", classmethod(lambda cls: cls(0, 2, 0, True)))
    monkeypatch.setattr(distributed, "join", lambda world, device: device)


def test_a_global_batch_smaller_than_the_ranks_is_refused_naming_both(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = config.load(workdir / "params.yaml", ["train.batch_size=1"])
    prepare(loaded, "add-janet")
    _as_rank_0_of_2(monkeypatch)
    with pytest.raises(ConfigError, match=r"train.batch_size = 1 for add-janet is split over 2 ranks, but no rank may go without; use a train.batch_size of at least 2$"):
        train(loaded, "add-janet", progress=False)


@pytest.mark.parametrize(("exitcodes", "summary"), [
    ({0: 143, 1: -9}, "rank 1 was killed by SIGKILL; the other 1 rank(s) stopped with it"),
    ({0: distributed.PEERS_LOST_EXIT, 1: -9, 2: -15}, "rank 1 was killed by SIGKILL; the other 2 rank(s) stopped with it"),
    ({1: 1, 0: 1}, "rank 0 exited with 1; rank 1 exited with 1"),
    ({0: 143, 1: 143}, "rank 0 exited with 143; rank 1 exited with 143"),  # both stopped from outside: both named
    ({0: -99, 1: 143}, "rank 0 was killed by signal 99; the other 1 rank(s) stopped with it"),  # no such signal name
])
def test_a_failed_job_names_the_ranks_that_failed_first(exitcodes: dict[int, int], summary: str) -> None:
    assert distributed.failure_summary(exitcodes) == summary


def _worker_ranks(agent: int) -> dict[int, int]:
    """rank -> pid of the workers torchrun (process ``agent``) started."""
    found = {}
    for child in subprocess.run(["pgrep", "-P", str(agent)], capture_output=True, text=True, check=False).stdout.split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        rank = [entry.split(b"=", 1)[1] for entry in environ if entry.startswith(b"RANK=")]
        if rank:
            found[int(rank[0])] = int(child)
    return found


def test_a_killed_rank_stops_the_job_with_a_message_and_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "p"
    _project(root, monkeypatch)
    process = subprocess.Popen(
        [RNNZOO, "train", "janet-adding", "--nproc-per-node", "2", "--set", "train.steps=100000"], cwd=root, env=os.environ.copy(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not files.checkpoint_path("janet-adding").exists():  # training is under way on both ranks
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
        os.kill(_worker_ranks(process.pid)[1], signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, stdout + stderr
    assert "error: rank 1 was killed by SIGKILL; the other 1 rank(s) stopped with it. No model was written" in stdout, stdout + stderr
    assert not files.model_path("janet-adding").exists()
    assert torch.load(files.checkpoint_path("janet-adding"), weights_only=True)["step"] % 5 == 0, "a whole checkpoint stays"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`rnnzoo.stage` = 'train'", output_format="list")
    assert run.info.status in ("KILLED", "FAILED"), "rank 0 ended its run (torchrun's SIGTERM, or its peer lost first)"


# In-process: the split and the weights that make N ranks' gradient the global batch's.

def _spec(loss_name: str) -> TaskSpec:
    return TaskSpec(input_size=3, output_size=4 if loss_name == "cross_entropy" else 2, head="step_classification",
                    baseline_loss=1.0, baseline="", loss_name=loss_name)


def _batch(loss_name: str, rows: int) -> Batch:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(rows, 5, 3, generator=generator, dtype=torch.float64)
    if loss_name == "mse":
        return Batch(x, torch.randn(rows, 2, generator=generator, dtype=torch.float64), torch.randint(1, 6, (rows,), generator=generator))
    target = torch.randint(0, 4, (rows, 5), generator=generator)
    target[torch.rand(rows, 5, generator=generator) < 0.4] = IGNORE_INDEX  # ranks count different numbers of targets
    target[:3] = IGNORE_INDEX  # and the first of three ranks (rows 0-2) counts none
    return Batch(x, target, None, torch.rand(rows, 5, generator=generator, dtype=torch.float64))


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy"])
def test_the_ranks_weighted_losses_average_to_the_global_batchs_gradient(loss_name: str, size: int) -> None:
    spec, batch = _spec(loss_name), _batch(loss_name, rows=7)  # 7 rows: blocks of 4 and 3, or 3, 2 and 2
    weight = torch.randn(3, spec.output_size, dtype=torch.float64, requires_grad=True)

    def predict(b: Batch) -> torch.Tensor:
        out = b.x @ weight  # (B, T, O)
        return out.mean(1) if loss_name == "mse" else out

    (expected,) = torch.autograd.grad(objectives.loss(spec, predict(batch), batch), weight)
    total = torch.zeros_like(weight)
    shards = [distributed.shard(batch, distributed.World(rank, size, rank, True)) for rank in range(size)]
    for field in range(len(Batch._fields)):
        if batch[field] is not None:
            assert torch.equal(torch.cat([s[field] for s in shards]), batch[field]), Batch._fields[field]
    for rank, shard in enumerate(shards):
        items = objectives.loss_items(spec, shard)
        loss = objectives.loss(spec, predict(shard), shard) if items else predict(shard).sum() * 0.0
        share = distributed.loss_share(items, objectives.loss_items(spec, batch), distributed.World(rank, size, rank, True))
        total += torch.autograd.grad(loss * share, weight)[0] / size  # DDP's average
    torch.testing.assert_close(total, expected)
    if loss_name == "cross_entropy":  # the shards' items add up to the global mean's denominator
        assert sum(objectives.loss_items(spec, s) for s in shards) == objectives.loss_items(spec, batch)
        assert size == 2 or objectives.loss_items(spec, shards[0]) == 0


@pytest.mark.parametrize(("call", "expected"), [
    ((2, 1, None, None), ["--nproc-per-node=2", "--nnodes=1", "--standalone"]),
    ((4, 2, 0, "node0:29400"), ["--nproc-per-node=4", "--nnodes=2", "--rdzv-endpoint=node0:29400", "--node-rank=0"]),
    ((4, 2, 1, "node0:29400"), ["--nproc-per-node=4", "--nnodes=2", "--rdzv-endpoint=node0:29400", "--node-rank=1"]),
    ((4, 1, None, "node0:29400"), ["--nproc-per-node=4", "--nnodes=1", "--rdzv-endpoint=node0:29400"]),
])
def test_the_torchrun_command_line(call: tuple, expected: list[str]) -> None:
    args = distributed.torchrun_args(*call, ["exp", "--resume"])
    assert args == [*expected, "-m", "rnnzoo.pipeline.stages.train", "exp", "--resume"]


def test_a_job_without_its_dataset_is_refused_once_before_any_rank_starts(workdir: Path) -> None:
    result = subprocess.run(
        [RNNZOO, "train", "add-janet", "--nproc-per-node", "2"], cwd=workdir, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1
    assert result.stdout.strip() == "error: dataset data/add-janet/dataset.pt does not exist: run `rnnzoo prepare add-janet` first"
    assert "torch.distributed" not in result.stderr, "no rank started"


@pytest.mark.parametrize(("args", "message"), [
    (["--nproc-per-node", "2", "--nnodes", "2"], "--nnodes 2: give --rdzv-endpoint HOST:PORT"),
    (["--nproc-per-node", "2", "--nnodes", "2", "--rdzv-endpoint", "h:1"], "--nnodes 2: give each node its --node-rank (0 to 1;"),
    (["--nnodes", "2"], "--nnodes, --node-rank and --rdzv-endpoint go with --nproc-per-node"),
    (["--rdzv-endpoint", "h:1"], "--nnodes, --node-rank and --rdzv-endpoint go with --nproc-per-node"),
    (["--nproc-per-node", "0"], "Invalid value for '--nproc-per-node'"),
])
def test_bad_torchrun_options_get_one_line_naming_them(workdir: Path, args: list[str], message: str) -> None:
    result = subprocess.run([RNNZOO, "train", "add-janet", *args], cwd=workdir, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert message in result.stdout + result.stderr and "Traceback" not in result.stdout + result.stderr


def test_more_ranks_than_gpus_is_refused_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    distributed.require_gpus(1)
    with pytest.raises(ValueError, match=r"--nproc-per-node must be at most 1 here \(one rank per CUDA GPU, and torch sees 1\), got 2"):
        distributed.require_gpus(2)
    world = distributed.World(rank=1, size=2, local_rank=1, launched=True)
    with pytest.raises(ValueError, match=r"LOCAL_RANK 1 has no CUDA GPU \(torch sees 1\): run at most 1 ranks per node"):
        distributed.join(world, torch.device("cuda"))  # torchrun run directly: the rank past the last GPU says so


TORCHRUN_ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


@pytest.mark.parametrize(("env", "expected"), [
    ({}, distributed.World()),
    (TORCHRUN_ENV, distributed.World(1, 2, 1, True)),
    ({**TORCHRUN_ENV, "LOCAL_RANK": None}, distributed.World(1, 2, 0, True)),
    ({"RANK": "3"}, "the environment sets RANK but not WORLD_SIZE, MASTER_ADDR, MASTER_PORT: a torchrun job sets all four"),
    ({**TORCHRUN_ENV, "MASTER_PORT": None}, "the environment sets RANK and WORLD_SIZE but not MASTER_PORT"),
    ({**TORCHRUN_ENV, "RANK": "2"}, "RANK < WORLD_SIZE, got RANK='2', WORLD_SIZE='2', LOCAL_RANK='1'"),
    ({**TORCHRUN_ENV, "WORLD_SIZE": "two"}, "whole numbers"),
], ids=["none", "torchrun", "no local rank", "stray rank", "no port", "rank past size", "not a number"])
def test_the_world_is_read_from_a_whole_torchrun_environment_only(monkeypatch: pytest.MonkeyPatch, env: dict, expected: Any) -> None:
    for name in (*TORCHRUN_ENV, "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=re_escape(expected)):
            distributed.World.from_env()
    else:
        assert distributed.World.from_env() == expected


def test_a_stray_rank_in_the_environment_is_one_line_not_a_wait(workdir: Path) -> None:
    env = {**os.environ, "RANK": "0"}
    env.pop("WORLD_SIZE", None)
    result = subprocess.run([RNNZOO, "train", "add-janet"], cwd=workdir, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    assert "the environment sets RANK but not WORLD_SIZE" in result.stdout, result.stdout + result.stderr


GLOO_RESET = "[../third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:4242: Connection reset by peer. This may indicate ..."


def test_a_peer_lost_during_ddps_weight_broadcast_is_one_line_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """DDP's broadcast of rank 0's weights is a collective outside the training loop."""
    def reset(*_: Any, **__: Any) -> None:
        raise RuntimeError(GLOO_RESET)

    world = distributed.World(rank=1, size=2, local_rank=1, launched=True)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", reset)
    with pytest.raises(distributed.PeersLost, match=r"^rank 1 lost the other ranks \(Read error \[127.0.0.1\]:4242: Connection reset by peer\)$"):
        distributed.wrap(torch.nn.Linear(2, 2), world, torch.device("cpu"))


def test_a_setup_failure_keeps_its_own_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not every gloo or store error is a lost peer: a port in use says so, not "lost the other ranks"."""
    def in_use(*_: Any, **__: Any) -> None:
        raise torch.distributed.DistNetworkError("The server socket has failed to listen on any local network address. port: 29500, useIpv6: false, code: -98, name: EADDRINUSE, message: address already in use")

    world = distributed.World(rank=0, size=2, local_rank=0, launched=True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", in_use)
    with pytest.raises(torch.distributed.DistNetworkError, match="address already in use"):
        distributed.join(world, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="^gloo: unsupported device$"), distributed.peers_lost(world):
        raise RuntimeError("gloo: unsupported device")
