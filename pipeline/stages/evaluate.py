"""Stage ``evaluate``: metrics of the trained model on the held-out split, and the plots.

Writes ``reports/<experiment>/metrics.json`` (DVC metrics) and PNG plots under
``reports/<experiment>/plots/``, and logs both to the experiment's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline import files, objectives, outputs, plots, tracking
from pipeline.config import Config
from pipeline.model import VectorModel, detach_state, from_record
from pipeline.tasks import TaskSpec, make_task


@torch.no_grad()
def evaluate(config: Config, experiment: str) -> dict[str, float]:
    exp = config.experiment(experiment)
    model = from_record(files.load_model_record(experiment, exp.params_hash()))
    spec: TaskSpec = model.spec
    splits = files.load_torch(files.dataset_path(experiment), "dataset", f"rnnzoo prepare {experiment}")
    task = make_task(exp.task, exp.task_options)
    accumulator = objectives.MetricAccumulator(spec)
    predicted, targets = [], []
    state = None
    for batch in task.batches(splits["valid"], config.evaluate.batch_size if not spec.carries_state else exp.train.batch_size):
        prediction, new_state = model(batch, state)
        state = detach_state(new_state) if spec.carries_state else None
        accumulator.add(prediction, batch)
        if spec.head in ("last_classification", "vector_classification"):
            predicted.append(prediction.argmax(-1))
            targets.append(batch.target)
    valid = accumulator.result()
    history = files.load_json(files.reports_dir(experiment) / "train_history.json", "training history", f"rnnzoo train {experiment}", list, ("step", "loss"))
    metrics = {f"valid.{name}": value for name, value in valid.items()}
    metrics.update({"baseline_loss": spec.baseline_loss, "valid.loss_over_baseline": valid["loss"] / spec.baseline_loss})
    metrics["train.final_loss"] = history[-1]["loss"]
    report = files.reports_dir(experiment)
    with outputs.together() as staged:  # metrics and plots appear together or not at all
        files.write_json(metrics, staged.file(report / "metrics.json"))
        made = _plots(experiment, model, spec, history, predicted, targets, staged.folder(report / "plots"))
    with tracking.stage_run("evaluate", exp) as mlflow:
        tracking.log_metrics(mlflow, metrics)
        for path in made:
            mlflow.log_artifact(str(report / "plots" / path.name), artifact_path="plots")
        if config.path is not None:
            mlflow.log_artifact(str(config.path), artifact_path="params")
    return metrics


def _plots(experiment: str, model: torch.nn.Module, spec: TaskSpec, history: list, predicted: list, targets: list, folder: Path) -> list[Path]:
    made = [plots.learning_curve(history, spec.baseline_loss, f"{experiment}: training loss", folder / "learning_curve.png")]
    if predicted:
        made.append(plots.confusion_matrix(
            torch.cat(targets).numpy(), torch.cat(predicted).numpy(), f"{experiment}: validation", folder / "confusion_matrix.png"
        ))
    if isinstance(model, VectorModel):
        made.append(plots.layer_gradient_norms(history, f"{experiment}: gradient norm per layer", folder / "layer_gradient_norms.png"))
        weight = model.network.layers[0].linear.weight.detach().numpy()
        made.append(plots.first_layer_filters(np.asarray(weight), f"{experiment}: first-layer filters", folder / "first_layer_filters.png"))
    return made
