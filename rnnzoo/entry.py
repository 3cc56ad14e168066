"""The ``rnnzoo`` command: the pipeline's command line, or a one-line message where the
``pipeline`` extra (typer, mlflow, dvc, onnx...) is not installed."""

from __future__ import annotations

import sys

INSTALL_HINT = "pip install 'rnnzoo[pipeline,cpu]' (or [pipeline,gpu] on a CUDA machine)"


def main() -> None:
    try:
        from rnnzoo.pipeline.cli import app
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] == "rnnzoo":
            raise
        sys.exit(f"rnnzoo: the command line needs the pipeline extra ({error.name} is not installed): {INSTALL_HINT}")
    app()
