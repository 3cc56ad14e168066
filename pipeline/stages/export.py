"""Stage ``export``: the trained model to ONNX under ``models/<experiment>/onnx/``.

Sequence models get ``sequence.onnx`` and, when unidirectional, ``step.onnx`` (streaming);
``unfolded_lstm`` gets ``vector.onnx``. Each file is self-contained and carries metadata:
cell, task, hidden size, params hash, git commit and the meaning of every input and output.
"""

from __future__ import annotations

from pathlib import Path

from rnnzoo.pipeline import files, onnx_export, outputs, tracking
from rnnzoo.pipeline.config import Config
from rnnzoo.pipeline.model_record import ModelRecord


def export(config: Config, experiment: str) -> list[Path]:
    exp = config.experiment(experiment)
    record = ModelRecord.load(experiment, exp.params_hash())
    graphs = record.build().graphs
    metadata = {
        "cell": exp.cell, "task": exp.task, "hidden_size": str(exp.hidden_size), "params_hash": exp.params_hash(),
        "git_commit": tracking.git_commit(), "opset": str(onnx_export.OPSET),
    }
    with outputs.together() as staged:  # the graphs appear together, replacing the previous folder whole
        folder = staged.folder(files.onnx_dir(experiment))
        for graph in graphs:
            model = onnx_export.exportable(record, graph)
            onnx_export.export_graph(model, graph, folder / f"{graph}.onnx", metadata)
    paths = [files.onnx_dir(experiment) / f"{graph}.onnx" for graph in graphs]
    with tracking.stage_run("export", exp) as mlflow:
        for path in paths:
            mlflow.log_artifact(str(path), artifact_path="onnx")
        # The whole-sequence (or vector) graph is the one served statelessly.
        names = [name for name in onnx_export.describe(model, graphs[0])["inputs"]]
        example = dict(zip(names, (t.numpy() for t in onnx_export.example_inputs(model, 2, 5 if model.is_sequence else None))))
        tracking.log_onnx_model(mlflow, paths[0], example, f"rnnzoo-{exp.cell}-{exp.task}")
    return paths
