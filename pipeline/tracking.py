"""The one module that talks to MLflow.

Each experiment row of ``params.yaml`` is one MLflow run, in one MLflow experiment per task
(``rnnzoo-<task>``). Every stage reopens that run (found by the tags ``rnnzoo.experiment`` and
``rnnzoo.params_hash``), so prepare, train and evaluate of one configuration land together;
a changed configuration gets a new run. Params are logged once, flattened. Under ``mlflow run``
the run MLflow made for the invocation (``MLFLOW_RUN_ID``) is that run.

Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project root>/mlflow.db``. The
project root is resolved to an absolute path, out of any ``dvc exp`` temporary workspace
(``.dvc/tmp/exps/...``), so runs from ``dvc exp run`` land in the same database.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import ExperimentConfig

DATABASE_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
_DVC_TEMP_WORKSPACE = os.sep.join(("", ".dvc", "tmp", "exps", ""))


def project_root(start: Path | None = None) -> Path:
    """The absolute project root; inside a ``dvc exp`` temp workspace, the real repository's."""
    path = (start or Path.cwd()).resolve()
    text = str(path) + os.sep
    if _DVC_TEMP_WORKSPACE in text:
        return Path(text.split(_DVC_TEMP_WORKSPACE)[0])
    return path


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / DATABASE_NAME}"


def ui_command() -> str:
    """The one command that opens the MLflow UI on these runs."""
    return f".venv/bin/mlflow ui --backend-store-uri {tracking_uri()}"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}} -> {"train.lr": 0.1}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def git_commit() -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=project_root())
    except OSError:
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _mlflow() -> Any:
    # Imported here: MLflow takes seconds to import, and `rnnzoo --help` should not wait for it.
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


@contextlib.contextmanager
def stage_run(stage: str, exp: ExperimentConfig) -> Iterator[Any]:
    """Reopen (or create) the run of the experiment's configuration for ``stage``; yields the mlflow module.

    A stage that raises marks the run FAILED, so a crashed or diverged stage never looks done.
    """
    params_hash = exp.params_hash()
    mlflow = _mlflow()
    # Under `mlflow run`, MLflow made the run for this invocation: record everything there.
    run_id = os.environ.get("MLFLOW_RUN_ID") or _find_run(mlflow, exp.name, exp.task, params_hash)
    tags = {
        "rnnzoo.experiment": exp.name, "rnnzoo.params_hash": params_hash, "rnnzoo.cell": exp.cell, "rnnzoo.task": exp.task,
        "rnnzoo.stage": stage, f"rnnzoo.stage.{stage}": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "mlflow.source.git.commit": git_commit(), "rnnzoo.dvc_experiment": os.environ.get("DVC_EXP_NAME", ""),
    }
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else exp.name) as run:
        mlflow.set_tags(tags)
        # Once per run; `mlflow run` may already have logged its entry point's own parameters.
        missing = {key: str(value) for key, value in flatten(exp.params()).items() if key not in run.data.params}
        if missing:
            mlflow.log_params(missing)
        try:
            yield mlflow
        except BaseException:
            mlflow.set_tag("rnnzoo.failed_stage", stage)
            mlflow.end_run(status="FAILED")
            raise


def _find_run(mlflow: Any, experiment: str, task: str, params_hash: str) -> str | None:
    name = f"rnnzoo-{task}"
    if mlflow.get_experiment_by_name(name) is None:
        # Artifacts beside the database, at the absolute project root: not in ./mlruns of
        # whatever directory ran first (a dvc exp temp workspace is deleted afterwards).
        mlflow.create_experiment(name, artifact_location=(project_root() / ARTIFACTS_DIR).as_uri())
    mlflow_experiment = mlflow.set_experiment(name)
    query = f"tags.`rnnzoo.experiment` = '{experiment}' and tags.`rnnzoo.params_hash` = '{params_hash}'"
    found = mlflow.search_runs([mlflow_experiment.experiment_id], filter_string=query, output_format="list", max_results=1)
    return found[0].info.run_id if found else None


def log_metrics(mlflow: Any, metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log finite metrics only: a NaN is a failure to report, never a result."""
    bad = {key: value for key, value in metrics.items() if not math.isfinite(value)}
    if bad:
        raise ValueError(f"refusing to log non-finite metrics {bad}")
    mlflow.log_metrics(dict(metrics), step=step)


def logged_steps(mlflow: Any, key: str) -> set[int]:
    """The steps at which the active run already holds metric ``key`` (a resumed stage skips them)."""
    run_id = mlflow.active_run().info.run_id
    return {metric.step for metric in mlflow.MlflowClient().get_metric_history(run_id, key)}


def log_model(mlflow: Any, module: Any, example_input: Any, registered_name: str, sequence: bool) -> None:
    """Log the torch model with a signature and input example, registered as ``registered_name``.

    The signature's batch axis, and for a ``sequence`` model its time axis, are -1, as in
    :func:`onnx_signature`: ``predict`` takes any batch and length.
    """
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    with torch.no_grad():
        example_output = module(example_input)

    def spec(array: Any, dynamic_axes: int) -> Any:
        return TensorSpec(array.dtype, tuple(-1 if axis < dynamic_axes else n for axis, n in enumerate(array.shape)))

    x, y = example_input.numpy(), example_output.numpy()
    # (B, T, ...) in; out (B, T, O) from a per-step head, (B, O) from a last-step or vector head.
    signature = ModelSignature(Schema([spec(x, 2 if sequence else 1)]), Schema([spec(y, 2 if sequence and y.ndim == 3 else 1)]))
    mlflow.pytorch.log_model(
        module,
        name="model",
        signature=signature,
        input_example=example_input.numpy(),
        registered_model_name=registered_name,
        # Pickled, not "pt2": torch.export unrolls the Python time loop, fixing T to the example's.
        serialization_format="pickle",
        # Listed, not inferred: inference re-loads the model in a subprocess, seconds per run.
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )


def onnx_signature(session_inputs: Any, session_outputs: Any) -> Any:
    """A signature with every symbolic axis (batch, time) as -1.

    One inferred from an example array would fix T, and ``predict`` would refuse other lengths.
    """
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    types = {"tensor(float)": np.dtype("float32"), "tensor(int64)": np.dtype("int64")}

    def spec(arg: Any) -> Any:
        shape = tuple(dim if isinstance(dim, int) else -1 for dim in arg.shape)
        return TensorSpec(types[arg.type], shape, arg.name)

    return ModelSignature(inputs=Schema([spec(a) for a in session_inputs]), outputs=Schema([spec(a) for a in session_outputs]))


def log_onnx_model(mlflow: Any, path: Any, example: dict[str, Any], registered_name: str) -> None:
    """Log an exported graph with the ``mlflow.onnx`` flavor, registered as ``registered_name``."""
    import onnx

    from pipeline import runtime

    session = runtime.open_session(path)
    mlflow.onnx.log_model(
        onnx.load(str(path)),
        name="onnx_model",
        signature=onnx_signature(session.get_inputs(), session.get_outputs()),
        input_example=example,
        registered_model_name=registered_name,
        save_as_external_data=False,
        # CUDA (TF32 off) wherever the model is served with onnxruntime-gpu and a GPU, else the CPU.
        onnx_execution_providers=runtime.provider_list(runtime.CUDA),
        pip_requirements=[runtime.distribution(), f"onnx=={onnx.__version__}"],
    )
