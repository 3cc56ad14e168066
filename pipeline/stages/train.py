"""Stage ``train``: fit one experiment's model and save it under ``models/<experiment>/``.

Deterministic by construction: the model is initialised from ``train.seed``, epoch ``e``'s
batches are shuffled by a generator seeded from ``(seed, e)``, and a checkpoint holds every
random state, so ``--resume`` after an interruption ends exactly where an uninterrupted run does.
A non-finite loss stops the stage with a message; no model file is written then.

Under torchrun (``rnnzoo train EXP --nproc-per-node N``) each rank trains its block of every
global batch under DistributedDataParallel (see :mod:`rnnzoo.pipeline.distributed`); rank 0 alone
writes the model, checkpoints (holding every rank's random state) and MLflow records. A global
batch with fewer rows than ranks (an epoch's last) is skipped: a rank cannot train on no rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from rnnzoo.cells import RecurrentCell
from rnnzoo.cells.checks import refuse
from rnnzoo.cells.loops.host_memory import keep_freed_memory
from rnnzoo.pipeline import distributed, files, objectives, outputs, tracking
from rnnzoo.pipeline.config import Config, ConfigError, ExperimentConfig, InvalidParam, TrainConfig
from rnnzoo.pipeline.model import PredictionModule, SequenceModel, VectorModel, build_model, detach_state
from rnnzoo.pipeline.model_record import ModelRecord
from rnnzoo.pipeline.tasks import Batch, Task, TaskSpec, make_task

# Epoch e of seed s shuffles with Generator(s * _EPOCH_STRIDE + e): distinct streams per seed.
_EPOCH_STRIDE = 1_000_003
# Rank r > 0 of a data-parallel job draws its dropout masks from seed s * _RANK_STRIDE + r (rank 0
# keeps the stream one process draws from): the ranks' masks differ, as one process's rows do.
_RANK_STRIDE = 1_000_033


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        refuse("train.device", name, "'auto' or 'cpu' here (torch sees no CUDA GPU)", InvalidParam)
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
    return batch.map(lambda t: t.to(device, non_blocking=True))


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


def _rank_state(state: TrainState, device: torch.device) -> list[torch.Tensor]:
    """This rank's random state and carried state: [cpu_rng, cuda_rng (empty on the CPU), *carried]."""
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0, dtype=torch.uint8)
    return [torch.get_rng_state(), cuda_rng, *(() if state.carried is None else state.carried)]


def _save_checkpoint(
    path: Path, exp: ExperimentConfig, model: nn.Module, optimizer: Any, schedule: Any, state: TrainState,
    world: distributed.World, device: torch.device,
) -> None:
    ranks = distributed.gather(_rank_state(state, device), world, device)  # every rank takes part; rank 0 writes
    if not world.is_main:
        return
    checkpoint = {
        "params_hash": exp.params_hash(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(), "step": state.step, "history": state.history,
        "window_loss": state.window_loss, "window_first_step": state.window_first_step,
        "valid_history": state.valid_history, "best_step": state.best_step, "best_value": state.best_value,
        "best_model": state.best_model, "carries_state": state.carried is not None,
        "ranks": [{"cpu_rng": rank[0], "cuda_rng": rank[1], "carried": rank[2:]} for rank in ranks],
    }
    with outputs.together() as staged:  # a failed write keeps the previous checkpoint and names the reason
        files.save_torch(checkpoint, staged.file(path))


def _load_checkpoint(
    path: Path, exp: ExperimentConfig, model: nn.Module, optimizer: Any, schedule: Any, world: distributed.World
) -> TrainState:
    # weights_only: a crafted checkpoint must not run code; the checkpoint holds tensors and plain data.
    # Every rank reads it (several nodes: models/ on a filesystem they share).
    checkpoint = files.load_torch(path, "checkpoint", f"rnnzoo train {exp.name}")
    if checkpoint["params_hash"] != exp.params_hash():
        raise ValueError(f"checkpoint {path} was made with other params; train without --resume, or delete it")
    if len(checkpoint["ranks"]) != world.size:
        raise ValueError(
            f"checkpoint {path} was written by {len(checkpoint['ranks'])} rank(s), and this run has {world.size}: "
            f"resume with --nproc-per-node (times --nnodes) {len(checkpoint['ranks'])}, or train without --resume"
        )
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    schedule.load_state_dict(checkpoint["schedule"])
    mine = checkpoint["ranks"][world.rank]
    torch.set_rng_state(mine["cpu_rng"])
    device = next(model.parameters()).device
    if mine["cuda_rng"].numel() and device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda_rng"], device)
    carried = None
    if checkpoint["carries_state"]:
        state_type = getattr(getattr(model, "layer", None), "state_type", tuple)
        carried = state_type(*(t.to(device) for t in mine["carried"]))
    return TrainState(
        checkpoint["step"], checkpoint["history"], carried, checkpoint["window_loss"], checkpoint["window_first_step"],
        checkpoint["valid_history"], checkpoint["best_step"], checkpoint["best_value"], checkpoint["best_model"],
    )


def validate(model: SequenceModel | VectorModel, task: Task, split: dict, batch_size: int, state: TrainState, mlflow: Any, logged: dict[int, float]) -> None:
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
    """Train ``experiment``; returns the model path. ``stop_after`` ends early (to test resume).

    Under torchrun every rank calls this; it returns on each rank once rank 0 has written.
    """
    exp = config.experiment(experiment)
    cfg = exp.train
    keep_freed_memory()  # each step's buffers reused, not page-faulted back in (host_memory's docstring)
    world = distributed.World.from_env()
    device = distributed.join(world, resolve_device(cfg.device))
    splits = files.load_torch(files.dataset_path(experiment), "dataset", f"rnnzoo prepare {experiment}")
    task = make_task(exp.task, exp.task_options)
    spec = task.spec(splits)
    torch.manual_seed(cfg.seed)
    model = build_model(exp.cell, spec, exp.hidden_size, **exp.cell_options, **exp.model_options).to(device)
    if world.rank:
        torch.manual_seed(cfg.seed * _RANK_STRIDE + world.rank)
    optimizer = make_optimizer(model.parameters(), cfg)
    schedule = make_schedule(optimizer, cfg)
    checkpoint = files.checkpoint_path(experiment)
    if resume and not checkpoint.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}; train without --resume")
    state = _load_checkpoint(checkpoint, exp, model, optimizer, schedule, world) if resume else TrainState()
    # bfloat16 needs no loss scaling, and autocast supports it on CPU and CUDA alike.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp else contextlib.nullcontext()
    min_examples = min_batch_examples(model)
    if cfg.batch_size < min_examples * world.size:
        needs = f"its model has batch norm, which needs batches of at least {min_examples} examples" if min_examples > 1 else "no rank may go without"
        split = f" is split over {world.size} ranks" if world.size > 1 else ""
        raise ConfigError(
            f"params: train.batch_size = {cfg.batch_size} for {experiment}{split}, but {needs}"
            f"; use a train.batch_size of at least {min_examples * world.size}"
        )
    net = distributed.wrap(model, world, device)  # after the checkpoint: DDP starts from rank 0's weights
    stream = batch_stream(task, splits["train"], spec, cfg, state.step, min_examples * world.size)
    last_step = cfg.steps if stop_after is None else min(cfg.steps, stop_after)

    # Rank 0 alone records: the other ranks train without a run (mlflow None).
    with tracking.stage_run("train", exp) if world.is_main else contextlib.nullcontext() as mlflow, distributed.peers_lost(world):
        if mlflow is not None:
            mlflow.set_tags({
                "rnnzoo.parameters": sum(p.numel() for p in model.parameters()), "rnnzoo.device": str(device),
                "rnnzoo.world_size": world.size,
            })
            tracking.log_dataset(mlflow, files.dataset_path(experiment), f"{experiment} ({exp.task})", "training")
        net.train()
        bar = tqdm(
            range(state.step, last_step), initial=state.step, total=cfg.steps, desc=f"train {experiment}", unit="step",
            disable=not progress or not world.is_main,
        )
        # The run may hold records already: a killed run's past its last checkpoint, which --resume
        # recomputes (equal, timings aside), or a whole earlier run of the same params (a rerun).
        # A record equal to the one held is not logged twice; one that differs is.
        logged = tracking.logged_values(mlflow, "train.loss") if mlflow is not None else {}
        selection = objectives.selection_metric(spec)[0]
        logged_valid = tracking.logged_values(mlflow, f"valid.{selection}") if cfg.eval_every and mlflow is not None else {}
        eval_batch_size = cfg.batch_size if spec.carries_state else config.evaluate.batch_size
        # Timing only: after --resume, the first window's rate counts this run's steps.
        clock, clock_step = time.perf_counter(), state.step
        for step in bar:
            batch, starts_epoch = next(stream)
            local = to_device(distributed.shard(batch, world), device)  # this rank's rows
            carried = None if starts_epoch or not spec.carries_state else state.carried
            with autocast:
                prediction, new_state = net(local, carried)
            items = objectives.loss_items(spec, local)
            # A rank whose rows have no counted target adds nothing (its mean would be 0 / 0).
            loss = objectives.loss(spec, prediction.float(), local) if items else prediction.float().sum() * 0.0
            share = distributed.loss_share(items, objectives.loss_items(spec, batch), world)
            global_loss = distributed.all_sum(loss.detach() * (share / world.size), world)  # the global batch's mean
            if not torch.isfinite(global_loss):
                raise TrainingDiverged(
                    f"training {experiment} diverged: loss is {global_loss.item()} at step {step + 1} (lr {schedule.get_last_lr()[0]:.3g}); "
                    "lower train.lr, raise train.grad_clip protection (a smaller value), or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            (loss * share).backward()  # DDP averages over ranks: the global batch's gradient
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            optimizer.step()
            schedule.step()
            for cell in model.modules():  # keep constrained weights (IndRNN's |u|) valid after every update
                if isinstance(cell, RecurrentCell):
                    cell.constrain_parameters_()
            state.carried = detach_state(new_state) if spec.carries_state else None
            state.step = step + 1
            state.window_loss += global_loss.item()
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                seconds = time.perf_counter() - clock
                record: dict[str, Any] = {
                    "step": state.step, "loss": state.window_loss / (state.step - state.window_first_step),
                    "lr": schedule.get_last_lr()[0], "grad_norm": float(grad_norm),
                    "steps_per_second": (state.step - clock_step) / max(seconds, 1e-9),
                }
                if mlflow is not None and logged.get(state.step) != record["loss"]:
                    tracking.log_metrics(mlflow, {f"train.{k}": v for k, v in record.items() if k != "step"}, step=state.step)
                record["layer_grad_norms"] = model.layer_gradient_norms()
                state.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")  # the speed is tqdm's own step/s, one figure
                state.window_loss, state.window_first_step = 0.0, state.step
                clock, clock_step = time.perf_counter(), state.step
            # Rank 0 validates (and keeps the best model) while the others wait at the next step.
            if mlflow is not None and cfg.eval_every and (state.step % cfg.eval_every == 0 or state.step == cfg.steps):
                validate(model, task, splits["valid"], eval_batch_size, state, mlflow, logged_valid)
            if state.step % cfg.checkpoint_every == 0 and state.step < cfg.steps:
                _save_checkpoint(checkpoint, exp, model, optimizer, schedule, state, world, device)
        if state.step < cfg.steps:  # stopped early on purpose: keep a checkpoint to resume from
            _save_checkpoint(checkpoint, exp, model, optimizer, schedule, state, world, device)
            return checkpoint
        distributed.check_replicas(model, world, device)
        path = files.model_path(experiment)
        if mlflow is None:
            return path
        trained = ModelRecord.of(exp, spec, model.cpu())
        if state.best_model is not None:  # the best model on valid, not the last
            model.load_state_dict(state.best_model)
            trained = trained.with_weights(model.state_dict(), state.best_step, f"valid.{selection}")
        with outputs.together() as staged:  # the model and its histories appear together or not at all
            files.write_json(state.history, staged.file(files.reports_dir(experiment) / "train_history.json"))
            files.write_json(state.valid_history, staged.file(files.reports_dir(experiment) / "valid_history.json"))
            files.save_torch(trained.to_dict(), staged.file(path))
        files.remove_checkpoint(experiment)
        example = next(task.batches(splits["valid"], 2))
        # Logged rebuilt from the record: a plain module on the CPU (no SyncBatchNorm from a CUDA
        # job's DDP, which would not train on a CPU), the weights written, the loop the user chose.
        loop = {name: exp.cell_options[name] for name in ("time_loop", "fused") if name in exp.cell_options}
        module = PredictionModule(trained.build(**loop)).eval()
        tracking.log_model(mlflow, module, module.pack(example), f"rnnzoo-{exp.cell}-{exp.task}", sequence=model.is_sequence)
    return path


if __name__ == "__main__":  # each torchrun rank: `rnnzoo train`'s own command line
    from rnnzoo.pipeline.cli import app

    app(["train", *sys.argv[1:]], prog_name="rnnzoo")
