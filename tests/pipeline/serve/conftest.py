"""Tiny exported models, each exported once per test session, and in-process apps over them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from rnnzoo.pipeline.serve.app import create_app
from rnnzoo.pipeline.serve.predictor import Predictor
from tests.pipeline.serve.exported import export

ADDING = ("adding", {"length": 5, "train_size": 4, "valid_size": 4})
# name -> (cell, task, task options, cell options, graph, extra metadata)
MODELS: dict[str, tuple[str, str, dict, dict, str, dict[str, str]]] = {
    "adding": ("janet", *ADDING, {"max_timescale": 10}, "sequence", {}),
    "bidirectional janet (ONNX Scan)": ("janet", *ADDING, {"max_timescale": 10, "bidirectional": True}, "sequence", {}),
    "bidirectional lstm (ONNX LSTM)": ("lstm", *ADDING, {"bidirectional": True}, "sequence", {}),
    # What an export that records the direction says: the key alone must refuse streaming.
    "marked bidirectional in metadata": ("janet", *ADDING, {"max_timescale": 10}, "sequence", {"bidirectional": "true"}),
    "language": ("lstm", "ptb", {"sentences": 30}, {}, "sequence", {}),
    # Its ReLU recurrence passes large inputs on unsquashed: features near float32's max overflow it.
    "indrnn": ("indrnn", *ADDING, {}, "sequence", {}),
    "phased": ("phased_lstm", "frequency", {"train_size": 4, "valid_size": 4}, {"ratio_on": 0.5}, "sequence", {}),
    "vector": ("unfolded_lstm", "mnist_vector", {"limit": 20}, {}, "vector", {}),
    "step graph": ("janet", *ADDING, {"max_timescale": 10}, "step", {}),
}


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``exported(name)``: the path of model ``name`` of MODELS, exported on first use."""
    paths: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in paths:
            cell, task, task_options, cell_options, graph, metadata = MODELS[name]
            folder = tmp_path_factory.mktemp(name.split()[0])
            paths[name] = export(folder, cell, task, task_options, cell_options, graph, metadata)
        return paths[name]

    return get


@pytest.fixture(scope="session")
def app_for(exported: Callable[[str], Path]) -> Callable[..., FastAPI]:
    """``app_for(name, **create_app options)``: an app over model ``name``, no socket."""

    def make(name: str, **options: Any) -> FastAPI:
        return create_app(Predictor(exported(name), max_length=40), **options)

    return make
