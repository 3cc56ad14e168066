"""Stage ``prepare``: make or load an experiment's data and save it under ``data/<experiment>/``."""

from __future__ import annotations

from pathlib import Path

from rnnzoo.pipeline import files, outputs, tracking
from rnnzoo.pipeline.config import Config
from rnnzoo.pipeline.tasks import make_task


def prepare(config: Config, experiment: str) -> Path:
    """Write ``data/<experiment>/dataset.pt``: the task's splits, tensors only."""
    exp = config.experiment(experiment)
    task = make_task(exp.task, exp.task_options)
    data_dir = Path(config.prepare.data_dir).expanduser() if config.prepare.data_dir else None
    with tracking.stage_run("prepare", exp) as mlflow:
        splits = task.prepare(data_dir, config.prepare.seed)
        spec = task.spec(splits)
        path = files.dataset_path(experiment)
        with outputs.together() as staged:  # a failed write names its reason and keeps the previous data
            files.save_torch(splits, staged.file(path))
        sizes = {f"data.{name}.examples": float(split["x"].shape[0]) for name, split in splits.items()}
        tracking.log_metrics(mlflow, {**sizes, "data.baseline_loss": spec.baseline_loss})
        mlflow.set_tag("rnnzoo.baseline", spec.baseline)
    return path
