"""Tiny untrained models exported the way `rnnzoo export` ships them, for the server tests."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from rnnzoo.pipeline import onnx_export
from rnnzoo.pipeline.model import build_model
from rnnzoo.pipeline.model_record import ModelRecord
from rnnzoo.pipeline.tasks import make_task


def export(folder: Path, cell: str, task: str, task_options: dict, cell_options: dict, graph: str = "sequence",
           metadata: dict[str, str] | None = None) -> Path:
    """``folder/<cell>.onnx``: a hidden size of 6, seeded weights, ``metadata`` on top of cell and task."""
    task_object = make_task(task, task_options)
    spec = task_object.spec(task_object.prepare(None, 0))
    torch.manual_seed(0)
    model = build_model(cell, spec, 6, **cell_options)
    record = ModelRecord(model.state_dict(), cell, 6, cell_options, {}, spec, params_hash="test")
    model = onnx_export.exportable(record, graph)  # the form `rnnzoo export` ships
    path = onnx_export.export_graph(model, graph, folder / f"{cell}.onnx", {"cell": cell, "task": task})
    if metadata:  # on top of what export writes (which may set the same keys)
        proto = onnx.load(str(path))
        onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **metadata})
        onnx.save_model(proto, str(path))
    return path
