"""``rnnzoo reproduce``: run each claim's experiments through the pipeline's stages, one run per arm
and seed, and read back what they measured.

A run is an ordinary experiment, named ``<claim>-<scale>-<arm>-s<seed>``, built from the claim's
scale into an in-memory params config (validated by the same rules as ``params.yaml``) and taken
through prepare -> train -> evaluate, tracked in MLflow with the tags ``rnnzoo.claim``,
``rnnzoo.scale`` and ``rnnzoo.seed``. A finished run leaves ``reports/<run>/reproduce.json``
holding its params hash: run again with the same params, it is read back, not retrained. A run
stopped mid-training resumes from its checkpoint (``train --resume``), so it records what an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rnnzoo.pipeline import config as config_module
from rnnzoo.pipeline import files, tracking
from rnnzoo.pipeline.claims import ClaimError
from rnnzoo.pipeline.claims.base import DATA_FILES, Claim, Run, Scale
from rnnzoo.pipeline.stages.evaluate import evaluate
from rnnzoo.pipeline.stages.prepare import prepare
from rnnzoo.pipeline.stages.train import train

STAMP = "reproduce.json"
# The files whose presence says a data folder is usable, per kind (either compressed or not for MNIST).
_MNIST_TEST = (("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"), ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte"))
_MNIST_TRAIN = (("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"), ("train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte"))
_REQUIRED = {"mnist": _MNIST_TEST, "mnist_standard": _MNIST_TRAIN + _MNIST_TEST, "ptb": (("ptb.valid.txt",), ("ptb.test.txt",))}
FOLDERS = {"mnist": "mnist", "mnist_standard": "mnist", "ptb": "ptb"}  # a kind of data -> its subfolder of --data


@dataclasses.dataclass(frozen=True)
class Planned:
    """One run of a claim: its arm, seed and experiment name."""

    arm: str
    seed: int
    experiment: str


def run_name(claim: str, scale: str, arm: str, seed: int) -> str:
    """The experiment name of one run: letters, digits, '-' and '_' only."""
    return f"{claim}-{scale}-{re.sub(r'[^A-Za-z0-9_]+', '_', arm).strip('_')}-s{seed}"


def data_folder(claim: Claim, scale: str, data: Path | None) -> Path | None:
    """The folder the scale's runs read real data from (``data / FOLDERS[kind]``), checked; None
    when they read none. Raises ClaimError saying which files to put where."""
    kind = claim.scales[scale].data
    if kind is None:
        return None
    if data is None:
        raise ClaimError(
            f"claim {claim.name} at scale {scale} reads {kind}: pass --data DIR, where DIR/{FOLDERS[kind]} holds {DATA_FILES[kind]}"
        )
    folder = data / FOLDERS[kind]
    missing = [names[0] for names in _REQUIRED[kind] if not any((folder / name).is_file() for name in names)]
    if missing:
        raise ClaimError(f"claim {claim.name} at scale {scale}: {folder} lacks {', '.join(missing)}; put {DATA_FILES[kind]} there")
    return folder.resolve()


def _formatted(options: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    return {key: value.format(data=folder) if isinstance(value, str) else value for key, value in options.items()}


def plan(claim: Claim, scale: str, data: Path | None, device: str = "auto") -> tuple[config_module.Config, list[Planned]]:
    """The params config of the claim's runs at ``scale`` and the runs, arm by arm, seed by seed."""
    if scale not in claim.scales:
        raise ClaimError(f"unknown scale {scale!r}; scales: {', '.join(claim.scales)}")
    setting: Scale = claim.scales[scale]
    folder = data_folder(claim, scale, data)
    planned, experiments = [], {}
    for arm in setting.arms:
        for seed in setting.seeds:
            name = run_name(claim.name, scale, arm.label, seed)
            planned.append(Planned(arm.label, seed, name))
            experiments[name] = {
                "cell": arm.cell,
                "task": arm.task,
                "hidden_size": arm.hidden_size,
                "cell_options": dict(arm.cell_options),
                "task_options": _formatted(dict(arm.task_options), folder),
                "model_options": dict(arm.model_options),
                "train": {**arm.train, "seed": seed},
            }
    raw = {
        "prepare": {"seed": 0, "data_dir": None if folder is None else str(folder)},
        "train": {"device": device, "checkpoint_every": 100, "log_every": 10, **setting.train},
        "evaluate": {"batch_size": 500},
        "bench": {"batch_sizes": [1], "repeats": 1, "warmup": 0, "threads": 0},
        "experiments": experiments,
    }
    return config_module.parse(raw), planned


def _stamp(name: str) -> dict[str, Any] | None:
    path = files.reports_dir(name) / STAMP
    return files.load_json(path, "reproduction stamp", f"rnnzoo reproduce (run {name})") if path.is_file() else None


def _finished(config: config_module.Config, name: str) -> bool:
    """The run finished with exactly these params (device and data folder included)."""
    stamp = _stamp(name)
    return stamp is not None and stamp.get("params_hash") == config.experiment(name).params_hash()


def _resumable(config: config_module.Config, name: str) -> bool:
    """A checkpoint of these params is there (a stopped run); one of other params is removed."""
    checkpoint = files.checkpoint_path(name)
    if not checkpoint.is_file():
        return False
    if files.load_torch(checkpoint, "checkpoint", f"rnnzoo reproduce (run {name})")["params_hash"] == config.experiment(name).params_hash():
        return True
    files.remove_checkpoint(name)
    return False


def load_run(planned: Planned) -> Run:
    """What a finished run left on disk."""
    report = files.reports_dir(planned.experiment)
    hint = f"rnnzoo reproduce (run {planned.experiment})"
    stamp = files.load_json(report / STAMP, "reproduction stamp", hint)
    return Run(
        planned.arm,
        planned.seed,
        files.load_json(report / "metrics.json", "metrics", hint),
        files.load_json(report / "train_history.json", "training history", hint, list, ("step", "loss")),
        files.load_json(report / "valid_history.json", "validation history", hint, list, ("step", "loss"), empty=True),
        float(stamp.get("seconds", 0.0)),
    )


def finished_runs(claim: Claim, scale: str) -> list[Run] | None:
    """The claim's runs at ``scale`` if every one has finished with today's params, else None.

    Each run is checked against the params that the claim makes today on the device and with
    the data folder its stamp records, so a report needs neither ``--data`` nor the same machine."""
    setting = claim.scales[scale]
    planned = [Planned(arm.label, seed, run_name(claim.name, scale, arm.label, seed)) for arm in setting.arms for seed in setting.seeds]
    configs: dict[tuple[str, str | None], config_module.Config] = {}
    for each in planned:
        stamp = _stamp(each.experiment)
        if stamp is None:
            return None
        where = (str(stamp.get("device", "cpu")), stamp.get("data"))
        if where not in configs:
            try:
                configs[where] = plan(claim, scale, None if where[1] is None else Path(where[1]), where[0])[0]
            except ClaimError:  # the data folder it read is gone: its params cannot be checked
                return None
        if not _finished(configs[where], each.experiment):
            return None
    return [load_run(each) for each in planned]


def run_claim(
    claim: Claim,
    scale: str,
    data: Path | None,
    device: str = "auto",
    say: Callable[[str], None] = print,
    progress: bool = True,
    rerun: bool = False,
) -> list[Run]:
    """Run (or read back) every run of ``claim`` at ``scale``; ``say`` gets one line per run.

    A run finished with the same params is read back, unless ``rerun``: the cache keys on params,
    not on code, so after a change to a cell, task or the training loop pass ``rerun``. A rerun
    first forgets the run (stamp, metrics, checkpoint), so a rerun that is stopped is resumed by a
    plain call, which reruns only what the stopped one had not redone."""
    config, planned = plan(claim, scale, data, device)
    runs = []
    for index, each in enumerate(planned, 1):
        head = f"[{index}/{len(planned)}] {claim.name} {scale} {each.arm} seed {each.seed}"
        if rerun:
            for path in (
                files.reports_dir(each.experiment) / STAMP,
                files.reports_dir(each.experiment) / "metrics.json",
                files.checkpoint_path(each.experiment),
            ):
                path.unlink(missing_ok=True)
        elif _finished(config, each.experiment):
            runs.append(load_run(each))
            say(f"{head}: done before, {claim.metric} {claim.value(runs[-1]):.4g}")
            continue
        start = time.perf_counter()
        tags = {"rnnzoo.claim": claim.name, "rnnzoo.scale": scale, "rnnzoo.seed": each.seed, "rnnzoo.arm": each.arm}
        with tracking.tagged(tags):
            prepare(config, each.experiment)
            train(config, each.experiment, resume=_resumable(config, each.experiment), progress=progress)
            evaluate(config, each.experiment)
        seconds = time.perf_counter() - start
        stamp = {
            "params_hash": config.experiment(each.experiment).params_hash(),
            "seconds": seconds,
            "claim": claim.name,
            "scale": scale,
            "arm": each.arm,
            "seed": each.seed,
            "device": device,
            "data": None if data is None else str(data.resolve()),
        }
        files.write_json(stamp, files.reports_dir(each.experiment) / STAMP)
        runs.append(load_run(each))
        say(f"{head}: {seconds:.0f} s, {claim.metric} {claim.value(runs[-1]):.4g}")
    return runs


def values_by_arm(claim: Claim, runs: Sequence[Run]) -> dict[str, list[float]]:
    """The rule's input: each arm's numbers, seed by seed."""
    values: dict[str, list[float]] = {}
    for run in runs:
        values.setdefault(run.arm, []).append(claim.value(run))
    return values
