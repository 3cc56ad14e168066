"""Find the ONNX file behind what a user passes to ``rnnzoo serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnzoo.pipeline import files

GRAPHS = ("sequence.onnx", "vector.onnx")


class ModelError(ValueError):
    """What the user named is not a model this server can serve; the message says why (shown at startup)."""


def _exported_graph(mlflow: Any, model: str) -> Path | None:
    """The exported graph behind a registered ONNX version, state inputs and all: the version holds
    it with the state zeroed inside (what ``mlflow models serve`` needs), while streaming sessions
    need the state as inputs, and the export stage logged the file itself to the version's run."""
    if not model.startswith("models:/"):
        return None
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    from rnnzoo.pipeline import tracking

    client = mlflow.MlflowClient()
    name, version = get_model_name_and_version(client, model)
    registered = client.get_model_version(name, version)
    if registered.tags.get(tracking.FLAVOR_TAG) != "onnx":
        return None
    run_id = registered.run_id
    logged = {item.path for item in client.list_artifacts(run_id, "onnx")} if run_id else set()
    for graph in GRAPHS:
        if f"onnx/{graph}" in logged:
            return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"onnx/{graph}"))
    return None


def resolve_model(model: str) -> Path:
    """An ONNX path, a folder holding one, an experiment name, or an MLflow URI (``models:/name/3``,
    ``models:/name@onnx``, ``runs:/...``)."""
    if model.startswith(("models:/", "runs:/")):
        from rnnzoo.pipeline import tracking

        mlflow = tracking._mlflow()  # the same tracking URI as the pipeline
        try:
            exported = _exported_graph(mlflow, model)
            if exported is not None:
                return exported
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model))
        except Exception as error:  # noqa: BLE001  MlflowException (unknown name, version or run), or the server unreachable
            reason = " ".join(str(error).split())[:300] or type(error).__name__
            raise ModelError(f"cannot fetch {model} from MLflow at {mlflow.get_tracking_uri()}: {reason}") from None
        found = sorted(folder.rglob("*.onnx"))
        if not found:
            raise FileNotFoundError(f"{model} holds no ONNX file: serve the model the export stage registered")
        return found[0]
    path = Path(model)
    if path.is_file():
        return path
    folder = path if path.is_dir() else files.onnx_dir(model)
    for name in GRAPHS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"no model at {model!r}: pass an ONNX file, a folder with {' or '.join(GRAPHS)}, an exported experiment's name "
        f"(looked in {files.onnx_dir(model)}), or a registered model URI such as models:/rnnzoo-janet-adding@onnx"
    )
