"""Stage ``evaluate``: metrics of the trained model on the held-out split, and the plots.

Writes ``reports/<experiment>/metrics.json`` (DVC metrics) and PNG plots under
``reports/<experiment>/plots/``, and logs both to the experiment's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rnnzoo.cells.loops.host_memory import keep_freed_memory
from rnnzoo.pipeline import files, objectives, outputs, plots, tracking
from rnnzoo.pipeline.config import Config
from rnnzoo.pipeline.model import SequenceModel, VectorModel
from rnnzoo.pipeline.model_record import ModelRecord
from rnnzoo.pipeline.tasks import Batch, TaskSpec, make_task


@torch.no_grad()
def evaluate(config: Config, experiment: str) -> dict[str, float]:
    """Metrics of the trained model on the valid split and, where the dataset has one, the test
    split (``test.*``: with ``train.eval_every``, of the model selected on valid)."""
    exp = config.experiment(experiment)
    keep_freed_memory()  # each batch's buffers reused, not page-faulted back in (host_memory's docstring)
    record = ModelRecord.load(experiment, exp.params_hash())
    model = record.build()
    spec: TaskSpec = model.spec
    splits = files.load_torch(files.dataset_path(experiment), "dataset", f"rnnzoo prepare {experiment}")
    task = make_task(exp.task, exp.task_options)
    batch_size = config.evaluate.batch_size if not spec.carries_state else exp.train.batch_size
    predicted, targets = [], []

    def keep_classes(prediction: torch.Tensor, batch: Batch) -> None:
        if spec.head in ("last_classification", "vector_classification"):
            predicted.append(prediction.argmax(-1))
            targets.append(batch.target)

    valid = objectives.split_metrics(model, task, splits["valid"], batch_size, keep_classes)
    report = files.reports_dir(experiment)
    history = files.load_json(report / "train_history.json", "training history", f"rnnzoo train {experiment}", list, ("step", "loss"))
    valid_history = files.load_json(report / "valid_history.json", "validation history", f"rnnzoo train {experiment}", list, ("step", "loss"), empty=True)
    metrics = {f"valid.{name}": value for name, value in valid.items()}
    if "test" in splits:
        metrics.update({f"test.{name}": value for name, value in objectives.split_metrics(model, task, splits["test"], batch_size).items()})
    metrics.update({"baseline_loss": spec.baseline_loss, "valid.loss_over_baseline": valid["loss"] / spec.baseline_loss})
    metrics["train.final_loss"] = history[-1]["loss"]
    if record.selected_step is not None:
        metrics["selected_step"] = record.selected_step
    with outputs.together() as staged:  # metrics and plots appear together or not at all
        files.write_json(metrics, staged.file(report / "metrics.json"))
        made = _plots(experiment, model, spec, history, valid_history, predicted, targets, staged.folder(report / "plots"))
    with tracking.stage_run("evaluate", exp) as mlflow:
        # valid.* are curves when training evaluated on valid: this model's point goes at its step.
        curve = {f"valid.{name}" for name in valid}
        step = record.selected_step if record.selected_step is not None else int(history[-1]["step"])
        tracking.log_metrics(mlflow, {key: value for key, value in metrics.items() if key in curve}, step=step, once=True)
        tracking.log_metrics(mlflow, {key: value for key, value in metrics.items() if key not in curve})
        for path in made:
            mlflow.log_artifact(str(report / "plots" / path.name), artifact_path="plots")
    return metrics


def _plots(
    experiment: str, model: SequenceModel | VectorModel, spec: TaskSpec, history: list, valid_history: list, predicted: list, targets: list, folder: Path
) -> list[Path]:
    made = [plots.learning_curve(history, spec.baseline_loss, f"{experiment}: training loss", folder / "learning_curve.png", valid_history)]
    if predicted:
        made.append(plots.confusion_matrix(
            torch.cat(targets).numpy(), torch.cat(predicted).numpy(), f"{experiment}: validation", folder / "confusion_matrix.png"
        ))
    if "layer_gradient_norms" in model.diagnostics:
        made.append(plots.layer_gradient_norms(history, f"{experiment}: gradient norm per layer", folder / "layer_gradient_norms.png"))
    weight = model.first_layer_weight() if "first_layer_filters" in model.diagnostics else None  # None: a sequence model's
    if weight is not None:
        made.append(plots.first_layer_filters(weight.numpy(), f"{experiment}: first-layer filters", folder / "first_layer_filters.png"))
    return made
