"""``params.yaml`` -> validated dataclasses. Every bad value is named here, before any work.

Layout of the file::

    prepare:   {seed, data_dir}
    train:     {device, steps, batch_size, lr, optimizer, schedule, ...}   defaults for all
    evaluate:  {batch_size}
    bench:     {batch_sizes, repeats, warmup, threads}
    experiments:
      <name>: {cell, task, hidden_size, cell_options, task_options, model_options, train}

An experiment's ``train`` map overrides the global ``train`` section for that experiment only,
so changing one experiment's learning rate reruns only that experiment's stages.

Every message names the key, the value and what is allowed; an unknown key at any level is
refused with the closest known one. Each experiment's model is built on torch's meta device
(no memory, no time, whatever the width), so the cells' own checks refuse an option that is
out of range here rather than in ``train``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import json
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from rnnzoo import cells
from rnnzoo.cells import checks
from rnnzoo.cells.checks import InvalidValue, cut, is_int, is_number, one_of, refuse, refuse_unknown, show
from rnnzoo.pipeline import baselines
from rnnzoo.pipeline.model import SequenceModel, build_model, is_sequence_cell
from rnnzoo.pipeline.tasks import TASKS, TaskSpec

DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step")
MODEL_OPTIONS = ("embedding_size", "tie_weights")
SECTIONS = ("prepare", "train", "evaluate", "bench", "experiments")
EXPERIMENT_KEYS = ("cell", "task", "hidden_size", "cell_options", "task_options", "model_options", "train")
# A number as users write it. YAML 1.1 (PyYAML) reads 1e-3 and 3e2, which have no dot, as strings.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A bad value in params: the message names the key, the value and what is allowed."""


class InvalidParam(InvalidValue, ConfigError):
    """A value in params outside what is allowed: ``params: <key> must be <allowed>, got <value>``."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"params: {key}", value, allowed)


def require(condition: bool, key: str, value: Any, allowed: str) -> None:
    """cells.checks.require for a params key: raises InvalidParam."""
    checks.require(condition, key, value, allowed, InvalidParam)


def _params_error(message: str) -> ConfigError:
    return ConfigError(f"params: {message}")


def _refuse_unknown(given: Iterable[Any], allowed: Sequence[str], key: str, whose: str = "") -> None:
    """Refuse keys under ``key`` that are not ``allowed`` (cells.checks.refuse_unknown)."""
    refuse_unknown(given, allowed, "key", whose, prefix=f"{key}." if key else "", error=_params_error)


def _admits(hint: Any, kind: type) -> bool:
    return hint is kind or kind in typing.get_args(hint)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """The one place a numeric string becomes a number: ``"1e-3"`` for a float field.

    An integer field takes integers only: ``"1e3"`` is refused with the integer to write.
    """
    if not isinstance(value, str) or not _NUMBER.fullmatch(value.strip()):
        return value
    if _admits(hint, float):
        return float(value)
    if _admits(hint, int):
        number = float(value)
        write = f" (write {int(number)})" if number.is_integer() else ""
        refuse(key, value, f"an integer{write}", InvalidParam)
    return value


def _coerced(values: Mapping[str, Any], hints: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {name: _coerce(value, hints.get(name), f"{key}.{name}") for name, value in values.items()}


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    seed: int = 0
    data_dir: str | None = None  # where real data files are (or are downloaded to)

    def validate(self, key: str) -> None:
        require(is_int(self.seed), f"{key}.seed", self.seed, "an integer")
        require(self.data_dir is None or isinstance(self.data_dir, str), f"{key}.data_dir", self.data_dir, "a path or null")


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
    # Every this many steps (0: never) the model is evaluated on the valid split, the figures are
    # logged as valid.* curves, and the best model so far (objectives.selection_metric) is kept:
    # it, not the last, becomes the trained model (the JANET and IndRNN papers' protocol).
    eval_every: int = 0
    # schedule "step": lr x lr_decay for each whole lr_decay_every steps past step lr_decay_start
    # (IndRNN: x0.1 every 20k steps; RHN: /1.02 an epoch after epoch 20). lr_decay_every 0: x0.1
    # at 1/2 and 3/4 of training.
    lr_decay: float = 0.1
    lr_decay_every: int = 0
    lr_decay_start: int = 0

    def validate(self, key: str) -> None:
        require(self.device in DEVICES, f"{key}.device", self.device, one_of(DEVICES))
        require(self.optimizer in OPTIMIZERS, f"{key}.optimizer", self.optimizer, one_of(OPTIMIZERS))
        require(self.schedule in SCHEDULES, f"{key}.schedule", self.schedule, one_of(SCHEDULES))
        require(is_int(self.seed), f"{key}.seed", self.seed, "an integer")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            require(is_int(value) and value >= 1, f"{key}.{name}", value, "an integer >= 1")
        for name in ("warmup_steps", "eval_every", "lr_decay_every", "lr_decay_start"):
            value = getattr(self, name)
            require(is_int(value) and value >= 0, f"{key}.{name}", value, "an integer >= 0")
        require(is_number(self.lr_decay) and 0 < self.lr_decay <= 1, f"{key}.lr_decay", self.lr_decay, "a number in (0, 1]")
        require(is_number(self.lr) and self.lr > 0, f"{key}.lr", self.lr, "a number > 0")
        require(is_number(self.weight_decay) and self.weight_decay >= 0, f"{key}.weight_decay", self.weight_decay, "a number >= 0")
        require(is_number(self.grad_clip) and self.grad_clip >= 0, f"{key}.grad_clip", self.grad_clip, "a number >= 0 (0 disables)")
        require(isinstance(self.amp, bool), f"{key}.amp", self.amp, "true or false")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int = 256

    def validate(self, key: str) -> None:
        require(is_int(self.batch_size) and self.batch_size >= 1, f"{key}.batch_size", self.batch_size, "an integer >= 1")


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
        valid = isinstance(sizes, tuple) and all(is_int(b) and b >= 1 for b in sizes) and 1 in sizes
        require(valid, f"{key}.batch_sizes", sizes, "a list of integers >= 1 that includes 1 (batch-1 latency)")
        require(is_int(self.repeats) and self.repeats >= 1, f"{key}.repeats", self.repeats, "an integer >= 1")
        require(is_int(self.warmup) and self.warmup >= 0, f"{key}.warmup", self.warmup, "an integer >= 0")
        require(is_int(self.threads) and self.threads >= 0, f"{key}.threads", self.threads, "an integer >= 0 (0: default)")


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
            close = difflib.get_close_matches(name, list(self.experiments), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown experiment {show(name)}{hint}; params define: {', '.join(self.experiments) or 'none'}")
        return self.experiments[name]


def _build(section_type: type, values: Mapping[str, Any], key: str) -> Any:
    allowed = [field.name for field in dataclasses.fields(section_type)]
    _refuse_unknown(values, allowed, key)
    section = section_type(**_coerced(values, typing.get_type_hints(section_type), key))
    section.validate(key)
    return section


def _section(raw: Mapping[str, Any], key: str, section_type: type) -> Any:
    values = raw.get(key)
    if values is None:
        raise ConfigError(f"params: section {key!r} is missing; the file needs the sections {', '.join(SECTIONS)}")
    require(isinstance(values, Mapping), key, values, "a mapping")
    return _build(section_type, values, key)


def _experiment(name: str, raw: Any, train_defaults: Mapping[str, Any], prepare: PrepareConfig) -> ExperimentConfig:
    key = f"experiments.{cut(name)}"
    require(isinstance(raw, Mapping), key, raw, "a mapping with cell, task and hidden_size")
    require(name.replace("-", "").replace("_", "").isalnum(), key, name, "a name of letters, digits, '-' and '_'")
    _refuse_unknown(raw, EXPERIMENT_KEYS, key)
    for required in ("cell", "task", "hidden_size"):
        if required not in raw:
            raise ConfigError(f"params: {key}.{required} is missing")
    require(raw["cell"] in _cell_names(), f"{key}.cell", raw["cell"], one_of(_cell_names()))
    require(raw["task"] in TASKS, f"{key}.task", raw["task"], one_of(sorted(TASKS)))
    hidden_size = _coerce(raw["hidden_size"], int, f"{key}.hidden_size")
    require(is_int(hidden_size) and hidden_size >= 1, f"{key}.hidden_size", hidden_size, "an integer >= 1")
    for options in ("cell_options", "task_options", "model_options", "train"):
        require(isinstance(raw.get(options, {}), Mapping), f"{key}.{options}", raw.get(options), "a mapping")
    train = _build(TrainConfig, {**train_defaults, **raw.get("train", {})}, f"{key}.train")
    cell_hints, task_hints = _cell_option_hints(raw["cell"]), typing.get_type_hints(TASKS[raw["task"]].Options)
    return ExperimentConfig(
        name=name, cell=raw["cell"], task=raw["task"], hidden_size=hidden_size, train=train, prepare=prepare,
        cell_options=_coerced(raw.get("cell_options", {}), cell_hints, f"{key}.cell_options"),
        task_options=_coerced(raw.get("task_options", {}), task_hints, f"{key}.task_options"),
        model_options=_coerced(raw.get("model_options", {}), typing.get_type_hints(SequenceModel.__init__), f"{key}.model_options"),
    )


def parse(raw: Any, path: Path | None = None) -> Config:
    """Validate a params mapping (as read from YAML)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"params: the file must hold a mapping with the sections {', '.join(SECTIONS)}, got {show(raw)}")
    _refuse_unknown(raw, SECTIONS, "", "sections")
    experiments_raw = raw.get("experiments")
    if not experiments_raw:
        raise ConfigError("params: section 'experiments' is missing or empty; define at least one experiment")
    require(isinstance(experiments_raw, Mapping), "experiments", experiments_raw, "a mapping of experiment names to settings")
    train_defaults = raw.get("train")
    if train_defaults is None:
        raise ConfigError(f"params: section 'train' is missing; the file needs the sections {', '.join(SECTIONS)}")
    prepare = _section(raw, "prepare", PrepareConfig)
    config = Config(
        prepare=prepare,
        train=_section(raw, "train", TrainConfig),
        evaluate=_section(raw, "evaluate", EvaluateConfig),
        bench=_section(raw, "bench", BenchConfig),
        experiments={str(name): _experiment(str(name), spec, train_defaults, prepare) for name, spec in experiments_raw.items()},
        path=path,
    )
    for experiment in config.experiments.values():
        _check_options(experiment)
    return config


def _cell_names() -> list[str]:
    """What an experiment's ``cell`` may be: a registered cell or a feed-forward baseline."""
    return sorted([*cells.names(), *baselines.names()])


def _cell_options(cell: str) -> tuple[str, ...]:
    """The ``cell_options`` keys ``cell`` accepts."""
    return baselines.options(cell) if cell in baselines.BASELINES else cells.options(cell)


def _cell_option_hints(cell: str) -> dict[str, Any]:
    """The declared type of each of ``cell``'s options (layer options and the cell's own)."""
    if cell in baselines.BASELINES:
        return typing.get_type_hints(baselines.BASELINES[cell].__init__)
    if cell in cells.VECTOR_MODELS:
        return typing.get_type_hints(cells.VECTOR_MODELS[cell].__init__)
    return {**typing.get_type_hints(cells.RecurrentLayer.__init__), **typing.get_type_hints(cells.SEQUENCE_CELLS[cell].__init__)}


def _required_cell_options(cell: str) -> list[str]:
    """The options ``cell`` has no default for (chrono_lstm's max_timescale)."""
    model = baselines.BASELINES.get(cell) or cells.VECTOR_MODELS.get(cell) or cells.SEQUENCE_CELLS[cell]
    parameters = inspect.signature(model.__init__).parameters.values()
    return [
        p.name for p in parameters
        if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("self", "input_size", "hidden_size")
    ]


def _blame(key: str, options: Mapping[str, Mapping[str, Any]], message: str) -> tuple[str, Any]:
    """``key.group.name`` and its value for the option ``message`` is about: the one it starts with,
    else the first it names, else the first group whole."""
    for pattern in (r"^{}\b", r"\b{}\b"):
        for group, values in options.items():
            for name, value in values.items():
                if re.search(pattern.format(re.escape(name)), message):
                    return f"{key}.{group}.{name}", value
    group, values = next(iter(options.items()))
    return f"{key}.{group}", dict(values)


def _refused(key: str, options: Mapping[str, Mapping[str, Any]], known: Mapping[str, Sequence[str]], error: Exception) -> ConfigError:
    """A check of the cell, model or task refused one of ``options`` (``known``: each group's option
    names): the same refusal at its params key, whether the user wrote the option or left its default."""
    group = next((group for group, names in known.items() if isinstance(error, InvalidValue) and error.key in names), None)
    if isinstance(error, InvalidValue) and group is not None:  # "<option> must be <allowed>, got <value>": re-keyed, same words
        return InvalidParam(f"{key}.{group}.{error.key}", error.value, error.allowed)
    path, value = _blame(key, options, str(error))  # a rule between options, in its own words
    return _params_error(f"{path} = {show(value)} is not allowed: {error}")


def _standin(task: str) -> TaskSpec:
    """The task's spec before any data exists: its own head (which decides what a model may be:
    no bidirectional language model, weights tied only to a language model's decoder), stand-in
    sizes (the options' checks do not depend on them)."""
    head = TASKS[task].head
    input_size = 4 if head == "vector_classification" else 2  # vectors: a 2x2 image, as the CNN baseline needs a square
    loss_name = "mse" if head == "last_regression" else "cross_entropy"
    return TaskSpec(input_size, 2, head=head, baseline_loss=1.0, baseline="stand-in", loss_name=loss_name)


def _check_options(experiment: ExperimentConfig) -> None:
    key = f"experiments.{cut(experiment.name)}"
    cell = experiment.cell
    _refuse_unknown(experiment.cell_options, _cell_options(cell), f"{key}.cell_options", f"for cell {cell}")
    _refuse_unknown(experiment.model_options, MODEL_OPTIONS, f"{key}.model_options")
    task_options = [field.name for field in dataclasses.fields(TASKS[experiment.task].Options)]
    _refuse_unknown(experiment.task_options, task_options, f"{key}.task_options", f"for task {experiment.task}")
    for name in _required_cell_options(cell):
        if name not in experiment.cell_options:
            raise ConfigError(f"params: {key}.cell_options.{name} is missing; cell {cell!r} requires it")
    # The pipeline's models feed (batch, time, features); a time-major layer would read them wrongly.
    batch_first = experiment.cell_options.get("batch_first", True)
    require(batch_first is True, f"{key}.cell_options.batch_first", batch_first, "true (the pipeline feeds batch-first sequences)")
    embedding_size = experiment.model_options.get("embedding_size", 0)
    require(
        is_int(embedding_size) and embedding_size >= 0, f"{key}.model_options.embedding_size", embedding_size, "an integer >= 0 (0: hidden_size)"
    )
    tie_weights = experiment.model_options.get("tie_weights", False)
    require(isinstance(tie_weights, bool), f"{key}.model_options.tie_weights", tie_weights, "true or false")
    try:
        TASKS[experiment.task](experiment.task_options)
    except ValueError as error:
        raise _refused(key, {"task_options": experiment.task_options}, {"task_options": task_options}, error) from None
    if cell in baselines.BASELINES and TASKS[experiment.task].head != "vector_classification":
        allowed = ", ".join(sorted(name for name, task in TASKS.items() if task.head == "vector_classification"))
        raise ConfigError(
            f"params: {key}: cell {cell!r} is a feed-forward baseline for vector classification; allowed tasks: {allowed}, "
            f"got task {experiment.task!r}"
        )
    vector_cell = not is_sequence_cell(cell)
    vector_task = TASKS[experiment.task].vector_input
    if vector_cell != vector_task:
        want = "a vector task (mnist_vector)" if vector_cell else "a sequence task"
        raise ConfigError(f"params: {key}: cell {cell!r} needs {want}, got task {experiment.task!r}")
    if vector_cell:
        require(not experiment.model_options, f"{key}.model_options", experiment.model_options, f"{{}}: cell {cell!r} takes none (they shape language models)")
    if not vector_cell and TASKS[experiment.task].head != "language_model":
        require(
            not experiment.model_options, f"{key}.model_options", experiment.model_options,
            f"{{}}: task {experiment.task!r} is not a language model (they shape a language model's embedding and decoder)",
        )
    try:
        with torch.device("meta"):  # shapes only: no memory and no time, however wide the model
            build_model(cell, _standin(experiment.task), experiment.hidden_size, **experiment.cell_options, **experiment.model_options)
    except (ValueError, TypeError) as error:
        options = {"cell_options": experiment.cell_options, "model_options": experiment.model_options}
        known = {"cell_options": _cell_options(cell), "model_options": MODEL_OPTIONS}
        raise _refused(key, options, known, error) from None


def _read_yaml(path: Path) -> Any:
    """The parsed file; a syntax error names the file, line and column."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as error:
        mark, context = error.problem_mark or error.context_mark, error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        # The context says where the construct that went wrong began (an unclosed quote's line).
        began = ""
        if error.context and context and context is not mark:
            began = f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
        raise ConfigError(f"params file {where}: not valid YAML: {error.problem or error.context}{began}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"params file {path}: not valid YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"params file {path} is not UTF-8 text (byte {error.start}); expected a YAML file") from None
    except OSError as error:
        raise ConfigError(f"params file {path} cannot be read: {error.strerror}") from None


def load(path: Path, overrides: list[str] | None = None) -> Config:
    """Read and validate ``path``, applying ``--set key.path=value`` overrides (values are YAML)."""
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist")
    raw = _read_yaml(path)
    if raw is None:
        raise ConfigError(f"params file {path} is empty; expected a mapping with the sections {', '.join(SECTIONS)}")
    if not isinstance(raw, dict):
        raise ConfigError(f"params file {path} holds {show(raw)}; expected a mapping with the sections {', '.join(SECTIONS)}")
    for override in overrides or []:
        _refuse_shadowed(raw, override)
        apply_override(raw, override)
    return parse(raw, path)


def _refuse_shadowed(raw: dict[str, Any], override: str) -> None:
    """``--set train.X=...`` where every experiment sets its own ``train.X`` would change nothing:
    refused, naming the keys that would (an experiment's own train map wins over the section)."""
    parts = override.split("=", 1)[0].strip().split(".")
    experiments = raw.get("experiments")
    if len(parts) != 2 or parts[0] != "train" or not isinstance(experiments, dict) or not experiments:
        return
    own = [name for name, exp in experiments.items() if isinstance(exp, dict) and isinstance(exp.get("train"), dict) and parts[1] in exp["train"]]
    if len(own) == len(experiments):
        raise ConfigError(
            f"--set {show(override)} would change nothing: every experiment sets its own train.{parts[1]}; "
            f"set it per experiment, e.g. experiments.{own[0]}.train.{parts[1]}=..."
        )


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in ``raw``; the value is parsed as YAML (``0.01``, ``true``, ``[1, 2]``)."""
    if "=" not in override:
        raise ConfigError(f"--set {show(override)}: expected KEY=VALUE, e.g. train.lr=0.01")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {show(override)}: the key {show(key)} has an empty part; expected KEY=VALUE, e.g. train.lr=0.01")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "cannot be parsed"
        raise ConfigError(
            f"--set {show(override)}: the value {show(text)} is not valid YAML ({problem}); expected e.g. 0.01, true, [1, 2] or a quoted string"
        ) from None
    node = raw
    for depth, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {show(override)}: {'.'.join(parts[: depth + 1])} = {show(node)} is not a section")
    node[parts[-1]] = value
