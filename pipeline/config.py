"""``params.yaml`` -> validated dataclasses. Every bad value is named here, before any work.

Layout of the file::

    prepare:   {seed, data_dir}
    train:     {device, steps, batch_size, lr, optimizer, schedule, ...}   defaults for all
    evaluate:  {batch_size}
    experiments:
      <name>: {cell, task, hidden_size, cell_options, task_options, model_options, train}

An experiment's ``train`` map overrides the global ``train`` section for that experiment only,
so changing one experiment's learning rate reruns only that experiment's stages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

import cells
from pipeline.tasks import TASKS

DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step")
MODEL_OPTIONS = ("embedding_size", "tie_weights")
SECTIONS = ("prepare", "train", "evaluate", "bench", "experiments")


class ConfigError(ValueError):
    """A bad value in params: the message names the key, the value and what is allowed."""


def _check(condition: bool, key: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"params: {key} = {value!r} is not allowed; expected {allowed}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    seed: int = 0
    data_dir: str | None = None  # where real data files are (or are downloaded to)

    def validate(self, key: str) -> None:
        _check(_is_int(self.seed), f"{key}.seed", self.seed, "an integer")
        _check(self.data_dir is None or isinstance(self.data_dir, str), f"{key}.data_dir", self.data_dir, "a path or null")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    device: str = "auto"
    seed: int = 0
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-2
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    amp: bool = False  # bfloat16 autocast (mixed precision)
    checkpoint_every: int = 100
    log_every: int = 10

    def validate(self, key: str) -> None:
        _check(self.device in DEVICES, f"{key}.device", self.device, f"one of {', '.join(DEVICES)}")
        _check(self.optimizer in OPTIMIZERS, f"{key}.optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        _check(self.schedule in SCHEDULES, f"{key}.schedule", self.schedule, f"one of {', '.join(SCHEDULES)}")
        _check(_is_int(self.seed), f"{key}.seed", self.seed, "an integer")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, f"{key}.{name}", value, "an integer >= 1")
        _check(_is_int(self.warmup_steps) and self.warmup_steps >= 0, f"{key}.warmup_steps", self.warmup_steps, "an integer >= 0")
        _check(_is_number(self.lr) and self.lr > 0, f"{key}.lr", self.lr, "a number > 0")
        _check(_is_number(self.weight_decay) and self.weight_decay >= 0, f"{key}.weight_decay", self.weight_decay, "a number >= 0")
        _check(_is_number(self.grad_clip) and self.grad_clip >= 0, f"{key}.grad_clip", self.grad_clip, "a number >= 0 (0 disables)")
        _check(isinstance(self.amp, bool), f"{key}.amp", self.amp, "true or false")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int = 256

    def validate(self, key: str) -> None:
        _check(_is_int(self.batch_size) and self.batch_size >= 1, f"{key}.batch_size", self.batch_size, "an integer >= 1")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    batch_sizes: tuple[int, ...] = (1, 8, 32, 128, 256)
    repeats: int = 20  # timed runs per measurement; p50 and p99 over them
    warmup: int = 3
    threads: int = 0  # intra-op threads for onnxruntime and torch; 0: torch's default

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes) if isinstance(self.batch_sizes, list) else self.batch_sizes)

    def validate(self, key: str) -> None:
        sizes = self.batch_sizes
        valid = isinstance(sizes, tuple) and all(_is_int(b) and b >= 1 for b in sizes) and 1 in sizes
        _check(valid, f"{key}.batch_sizes", sizes, "a list of integers >= 1 that includes 1 (batch-1 latency)")
        _check(_is_int(self.repeats) and self.repeats >= 1, f"{key}.repeats", self.repeats, "an integer >= 1")
        _check(_is_int(self.warmup) and self.warmup >= 0, f"{key}.warmup", self.warmup, "an integer >= 0")
        _check(_is_int(self.threads) and self.threads >= 0, f"{key}.threads", self.threads, "an integer >= 0 (0: default)")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    name: str
    cell: str
    task: str
    hidden_size: int
    train: TrainConfig
    prepare: PrepareConfig  # the data's seed and source: part of what defines the results
    cell_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # embedding_size, tie_weights

    def params(self) -> dict[str, Any]:
        """Everything that defines this experiment's results, as plain data."""
        return dataclasses.asdict(self)

    def params_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.params(), sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Config:
    prepare: PrepareConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    bench: BenchConfig
    experiments: dict[str, ExperimentConfig]
    path: Path | None = None

    def experiment(self, name: str) -> ExperimentConfig:
        if name not in self.experiments:
            raise ConfigError(f"unknown experiment {name!r}; params define: {', '.join(self.experiments) or 'none'}")
        return self.experiments[name]


def _build(section_type: type, values: Mapping[str, Any], key: str) -> Any:
    allowed = [field.name for field in dataclasses.fields(section_type)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"params: unknown key(s) {', '.join(f'{key}.{name}' for name in unknown)}; allowed: {', '.join(allowed)}")
    section = section_type(**values)
    section.validate(key)
    return section


def _section(raw: Mapping[str, Any], key: str, section_type: type) -> Any:
    values = raw.get(key)
    if values is None:
        raise ConfigError(f"params: section {key!r} is missing; the file needs the sections {', '.join(SECTIONS)}")
    _check(isinstance(values, Mapping), key, values, "a mapping")
    return _build(section_type, values, key)


def _experiment(name: str, raw: Any, train_defaults: Mapping[str, Any], prepare: PrepareConfig) -> ExperimentConfig:
    key = f"experiments.{name}"
    _check(isinstance(raw, Mapping), key, raw, "a mapping with cell, task and hidden_size")
    allowed = {"cell", "task", "hidden_size", "cell_options", "task_options", "model_options", "train"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"params: unknown key(s) {', '.join(f'{key}.{k}' for k in unknown)}; allowed: {', '.join(sorted(allowed))}")
    for required in ("cell", "task", "hidden_size"):
        if required not in raw:
            raise ConfigError(f"params: {key}.{required} is missing")
    _check(raw["cell"] in cells.names(), f"{key}.cell", raw["cell"], f"one of {', '.join(cells.names())}")
    _check(raw["task"] in TASKS, f"{key}.task", raw["task"], f"one of {', '.join(sorted(TASKS))}")
    _check(_is_int(raw["hidden_size"]) and raw["hidden_size"] >= 1, f"{key}.hidden_size", raw["hidden_size"], "an integer >= 1")
    for options in ("cell_options", "task_options", "model_options", "train"):
        _check(isinstance(raw.get(options, {}), Mapping), f"{key}.{options}", raw.get(options), "a mapping")
    train = _build(TrainConfig, {**train_defaults, **raw.get("train", {})}, f"{key}.train")
    return ExperimentConfig(
        name=name, cell=raw["cell"], task=raw["task"], hidden_size=raw["hidden_size"], train=train, prepare=prepare,
        cell_options=dict(raw.get("cell_options", {})), task_options=dict(raw.get("task_options", {})),
        model_options=dict(raw.get("model_options", {})),
    )


def parse(raw: Any, path: Path | None = None) -> Config:
    """Validate a params mapping (as read from YAML)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"params: the file must hold a mapping with the sections {', '.join(SECTIONS)}, got {type(raw).__name__}")
    experiments_raw = raw.get("experiments")
    if not experiments_raw:
        raise ConfigError("params: section 'experiments' is missing or empty; define at least one experiment")
    _check(isinstance(experiments_raw, Mapping), "experiments", experiments_raw, "a mapping of experiment names to settings")
    train_defaults = raw.get("train")
    if train_defaults is None:
        raise ConfigError(f"params: section 'train' is missing; the file needs the sections {', '.join(SECTIONS)}")
    prepare = _section(raw, "prepare", PrepareConfig)
    config = Config(
        prepare=prepare,
        train=_section(raw, "train", TrainConfig),
        evaluate=_section(raw, "evaluate", EvaluateConfig),
        bench=_section(raw, "bench", BenchConfig),
        experiments={name: _experiment(str(name), spec, train_defaults, prepare) for name, spec in experiments_raw.items()},
        path=path,
    )
    for experiment in config.experiments.values():
        _check_names(experiment)
    return config


def _check_names(experiment: ExperimentConfig) -> None:
    key = f"experiments.{experiment.name}"
    name = experiment.name
    _check(name.replace("-", "").replace("_", "").isalnum(), key, name, "a name of letters, digits, '-' and '_'")
    allowed = set(cells.options(experiment.cell))
    unknown = sorted(set(experiment.cell_options) - allowed)
    if unknown:
        raise ConfigError(f"params: unknown key(s) {', '.join(f'{key}.cell_options.{k}' for k in unknown)}; allowed for {experiment.cell}: {', '.join(sorted(allowed))}")
    unknown = sorted(set(experiment.model_options) - set(MODEL_OPTIONS))
    if unknown:
        raise ConfigError(f"params: unknown key(s) {', '.join(f'{key}.model_options.{k}' for k in unknown)}; allowed: {', '.join(MODEL_OPTIONS)}")
    try:
        TASKS[experiment.task](experiment.task_options)
    except ValueError as error:
        raise ConfigError(f"params: {key}.task_options: {error}") from None
    vector_cell = not cells.is_sequence_model(experiment.cell)
    vector_task = TASKS[experiment.task].vector_input
    if vector_cell != vector_task:
        want = "a vector task (mnist_vector)" if vector_cell else "a sequence task"
        raise ConfigError(f"params: {key}: cell {experiment.cell!r} needs {want}, got task {experiment.task!r}")


def load(path: Path, overrides: list[str] | None = None) -> Config:
    """Read and validate ``path``, applying ``--set key.path=value`` overrides (values are YAML)."""
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist")
    raw = yaml.safe_load(path.read_text())
    for override in overrides or []:
        apply_override(raw, override)
    return parse(raw, path)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in ``raw``; the value is parsed as YAML (``0.01``, ``true``, ``[1, 2]``)."""
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. train.lr=0.01")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {override!r}: the key {key!r} has an empty part")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {override!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(text)
