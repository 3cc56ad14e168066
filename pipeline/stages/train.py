"""Stage ``train``: fit one experiment's model and save it under ``models/<experiment>/``.

Deterministic by construction: the model is initialised from ``train.seed``, epoch ``e``'s
batches are shuffled by a generator seeded from ``(seed, e)``, and a checkpoint holds every
random state, so ``--resume`` after an interruption ends exactly where an uninterrupted run does.
A non-finite loss stops the stage with a message; no model file is written then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from rnnzoo.cells import RecurrentCell
from rnnzoo.pipeline import files, objectives, outputs, tracking
from rnnzoo.pipeline.config import Config, ConfigError, ExperimentConfig, TrainConfig
from rnnzoo.pipeline.model import PredictionModule, build_model, detach_state
from rnnzoo.pipeline.model_record import ModelRecord
from rnnzoo.pipeline.tasks import Batch, Task, TaskSpec, make_task

# Epoch e of seed s shuffles with Generator(s * _EPOCH_STRIDE + e): distinct streams per seed.
_EPOCH_STRIDE = 1_000_003


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params: train.device = 'cuda' but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return torch.device(name)


def make_optimizer(parameters: Any, config: TrainConfig) -> torch.optim.Optimizer:
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}
    return kinds[config.optimizer](parameters, lr=config.lr, weight_decay=config.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant, cosine to zero, or step decay: x ``lr_decay`` for each whole
    ``lr_decay_every`` steps past step ``lr_decay_start`` (``lr_decay_every`` 0: x0.1 at 1/2 and 3/4)."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        if config.schedule == "step" and config.lr_decay_every:
            decays = max(0, step - config.lr_decay_start) // config.lr_decay_every  # whole periods since the start
            return config.lr_decay**decays
        if config.schedule == "step":
            return 0.1 ** sum(progress >= mark for mark in (0.5, 0.75))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batch_stream(
    task: Task, split: dict, spec: TaskSpec, config: TrainConfig, start_step: int, min_examples: int = 1
) -> Iterator[tuple[Batch, bool]]:
    """Endless ``(batch, starts_epoch)`` from step ``start_step`` on, the same on every run.

    A batch of fewer than ``min_examples`` examples (an epoch's last, when the split does not
    divide by the batch size) is skipped: batch norm cannot train on one example. Its examples
    land in other batches of later epochs, which are shuffled anew.
    """
    step, epoch = 0, 0
    while True:
        # Language models read their stream in order (state carries across batches).
        generator = None if spec.carries_state else torch.Generator().manual_seed(config.seed * _EPOCH_STRIDE + epoch)
        for index, batch in enumerate(task.batches(split, config.batch_size, generator)):
            if batch.x.shape[0] < min_examples:
                continue
            if step >= start_step:
                yield batch, index == 0
            step += 1
        if step == 0:
            why = f" of at least {min_examples} examples, which batch norm needs" if min_examples > 1 else ""
            raise ValueError(f"task {task.name!r} produced no training batches{why}; give it more training examples")
        epoch += 1


def to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(*(None if t is None else t.to(device, non_blocking=True) for t in batch))


def min_batch_examples(model: nn.Module) -> int:
    """The fewest examples a training batch needs: 2 where batch norm takes statistics over the batch."""
    return 2 if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) else 1


@dataclasses.dataclass
class TrainState:
    """Everything a checkpoint holds besides the model."""

    step: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    carried: Any = None  # language models: the recurrent state between batches
    # The logging window in progress: the sum of its losses and the step it started after, so a
    # resumed run averages the same steps as an uninterrupted one.
    window_loss: float = 0.0
    window_first_step: int = 0
    # train.eval_every > 0: the valid split's figures at each evaluation, and the best model so far.
    valid_history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_step: int = 0
    best_value: float | None = None
    best_model: dict[str, Any] | None = None  # its state_dict, on the CPU


def _save_checkpoint(path: Path, exp: ExperimentConfig, model: nn.Module, optimizer: Any, schedule: Any, state: TrainState) -> None:
    checkpoint = {
        "params_hash": exp.params_hash(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(), "step": state.step, "history": state.history,
        "carried": None if state.carried is None else list(state.carried),
        "window_loss": state.window_loss, "window_first_step": state.window_first_step,
        "valid_history": state.valid_history, "best_step": state.best_step, "best_value": state.best_value,
        "best_model": state.best_model,
        "cpu_rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    with outputs.together() as staged:  # a failed write keeps the previous checkpoint and names the reason
        files.save_torch(checkpoint, staged.file(path))


def _load_checkpoint(path: Path, exp: ExperimentConfig, model: nn.Module, optimizer: Any, schedule: Any) -> TrainState:
    # weights_only: a crafted checkpoint must not run code; the checkpoint holds tensors and plain data.
    checkpoint = files.load_torch(path, "checkpoint", f"rnnzoo train {exp.name}")
    if checkpoint["params_hash"] != exp.params_hash():
        raise ValueError(f"checkpoint {path} was made with other params; train without --resume, or delete it")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    schedule.load_state_dict(checkpoint["schedule"])
    torch.set_rng_state(checkpoint["cpu_rng"])
    if checkpoint["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
    device = next(model.parameters()).device
    carried = checkpoint["carried"]
    if carried is not None:
        state_type = getattr(getattr(model, "layer", None), "state_type", tuple)
        carried = state_type(*(t.to(device) for t in carried))
    return TrainState(
        checkpoint["step"], checkpoint["history"], carried, checkpoint["window_loss"], checkpoint["window_first_step"],
        checkpoint["valid_history"], checkpoint["best_step"], checkpoint["best_value"], checkpoint["best_model"],
    )


def validate(model: nn.Module, task: Task, split: dict, batch_size: int, state: TrainState, mlflow: Any, logged: dict[int, float]) -> None:
    """Evaluate on the valid split at ``state.step``: log the figures as ``valid.*`` curves, add
    them to ``state.valid_history``, and keep the model if it is the best so far."""
    model.eval()
    metrics = objectives.split_metrics(model, task, split, batch_size)
    model.train()
    if not all(math.isfinite(value) for value in metrics.values()):
        raise TrainingDiverged(f"the valid figures are not finite at step {state.step}: {metrics}; lower train.lr or check the data")
    name, _ = objectives.selection_metric(model.spec)
    if logged.get(state.step) != metrics[name]:  # a resumed or repeated run logs each record once
        tracking.log_metrics(mlflow, {f"valid.{key}": value for key, value in metrics.items()}, step=state.step)
    state.valid_history.append({"step": state.step, **metrics})
    if objectives.is_better(model.spec, metrics[name], state.best_value):
        state.best_step, state.best_value = state.step, metrics[name]
        state.best_model = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def train(config: Config, experiment: str, resume: bool = False, stop_after: int | None = None, progress: bool = True) -> Path:
    """Train ``experiment``; returns the model path. ``stop_after`` ends early (to test resume)."""
    exp = config.experiment(experiment)
    cfg = exp.train
    device = resolve_device(cfg.device)
    splits = files.load_torch(files.dataset_path(experiment), "dataset", f"rnnzoo prepare {experiment}")
    task = make_task(exp.task, exp.task_options)
    spec = task.spec(splits)
    torch.manual_seed(cfg.seed)
    model = build_model(exp.cell, spec, exp.hidden_size, **exp.cell_options, **exp.model_options).to(device)
    optimizer = make_optimizer(model.parameters(), cfg)
    schedule = make_schedule(optimizer, cfg)
    checkpoint = files.checkpoint_path(experiment)
    if resume and not checkpoint.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}; train without --resume")
    state = _load_checkpoint(checkpoint, exp, model, optimizer, schedule) if resume else TrainState()
    # bfloat16 needs no loss scaling, and autocast supports it on CPU and CUDA alike.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp else contextlib.nullcontext()
    min_examples = min_batch_examples(model)
    if cfg.batch_size < min_examples:
        raise ConfigError(
            f"params: train.batch_size = {cfg.batch_size} for {experiment}, but its model has batch norm, "
            f"which needs batches of at least {min_examples} examples"
        )
    stream = batch_stream(task, splits["train"], spec, cfg, state.step, min_examples)
    last_step = cfg.steps if stop_after is None else min(cfg.steps, stop_after)

    with tracking.stage_run("train", exp) as mlflow:
        mlflow.set_tags({"rnnzoo.parameters": sum(p.numel() for p in model.parameters()), "rnnzoo.device": str(device)})
        tracking.log_dataset(mlflow, files.dataset_path(experiment), f"{experiment} ({exp.task})", "training")
        model.train()
        bar = tqdm(range(state.step, last_step), initial=state.step, total=cfg.steps, desc=f"train {experiment}", unit="step", disable=not progress)
        # The run may hold records already: a killed run's past its last checkpoint, which --resume
        # recomputes (equal, timings aside), or a whole earlier run of the same params (a rerun).
        # A record equal to the one held is not logged twice; one that differs is.
        logged = tracking.logged_values(mlflow, "train.loss")
        selection = objectives.selection_metric(spec)[0]
        logged_valid = tracking.logged_values(mlflow, f"valid.{selection}") if cfg.eval_every else {}
        eval_batch_size = cfg.batch_size if spec.carries_state else config.evaluate.batch_size
        # Timing only: after --resume, the first window's rate counts this run's steps.
        clock, clock_step = time.perf_counter(), state.step
        for step in bar:
            batch, starts_epoch = next(stream)
            batch = to_device(batch, device)
            carried = None if starts_epoch or not spec.carries_state else state.carried
            with autocast:
                prediction, new_state = model(batch, carried)
            loss = objectives.loss(spec, prediction.float(), batch)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"training {experiment} diverged: loss is {loss.item()} at step {step + 1} (lr {schedule.get_last_lr()[0]:.3g}); "
                    "lower train.lr, raise train.grad_clip protection (a smaller value), or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            optimizer.step()
            schedule.step()
            for cell in model.modules():  # keep constrained weights (IndRNN's |u|) valid after every update
                if isinstance(cell, RecurrentCell):
                    cell.constrain_parameters_()
            state.carried = detach_state(new_state) if spec.carries_state else None
            state.step = step + 1
            state.window_loss += loss.item()
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                seconds = time.perf_counter() - clock
                record: dict[str, Any] = {
                    "step": state.step, "loss": state.window_loss / (state.step - state.window_first_step),
                    "lr": schedule.get_last_lr()[0], "grad_norm": float(grad_norm),
                    "steps_per_second": (state.step - clock_step) / max(seconds, 1e-9),
                }
                if logged.get(state.step) != record["loss"]:
                    tracking.log_metrics(mlflow, {f"train.{k}": v for k, v in record.items() if k != "step"}, step=state.step)
                record["layer_grad_norms"] = model.layer_gradient_norms()
                state.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")  # the speed is tqdm's own step/s, one figure
                state.window_loss, state.window_first_step = 0.0, state.step
                clock, clock_step = time.perf_counter(), state.step
            if cfg.eval_every and (state.step % cfg.eval_every == 0 or state.step == cfg.steps):
                validate(model, task, splits["valid"], eval_batch_size, state, mlflow, logged_valid)
            if state.step % cfg.checkpoint_every == 0 and state.step < cfg.steps:
                _save_checkpoint(checkpoint, exp, model, optimizer, schedule, state)
        if state.step < cfg.steps:  # stopped early on purpose: keep a checkpoint to resume from
            _save_checkpoint(checkpoint, exp, model, optimizer, schedule, state)
            return checkpoint
        path = files.model_path(experiment)
        trained = ModelRecord.of(exp, spec, model.cpu())
        if state.best_model is not None:  # the best model on valid, not the last
            model.load_state_dict(state.best_model)
            trained = trained.with_weights(model.state_dict(), state.best_step, f"valid.{selection}")
        with outputs.together() as staged:  # the model and its histories appear together or not at all
            files.write_json(state.history, staged.file(files.reports_dir(experiment) / "train_history.json"))
            files.write_json(state.valid_history, staged.file(files.reports_dir(experiment) / "valid_history.json"))
            files.save_torch(trained.to_dict(), staged.file(path))
        checkpoint.unlink(missing_ok=True)
        example = next(task.batches(splits["valid"], 2))
        module = PredictionModule(model).eval()
        tracking.log_model(mlflow, module, module.pack(example), f"rnnzoo-{exp.cell}-{exp.task}", sequence=model.is_sequence)
    return path
