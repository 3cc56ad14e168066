"""ONNX export: parity with torch for every cell and head, dynamic batch and time, streaming steps, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from rnnzoo.pipeline import onnx_export, runtime
from rnnzoo.pipeline.model import build_model
from rnnzoo.pipeline.model_record import ModelRecord
from rnnzoo.pipeline.tasks import make_task

# (cell, task, task options, cell options, model options): every cell, every head.
CASES = {
    "janet-last_regression": ("janet", "adding", {"length": 6, "train_size": 8, "valid_size": 4}, {"max_timescale": 10}, {}),
    "chrono_lstm-last_regression": ("chrono_lstm", "adding", {"length": 6, "train_size": 8, "valid_size": 4}, {"max_timescale": 10}, {}),
    "lstm-language_model": ("lstm", "ptb", {"sentences": 30}, {"num_layers": 2}, {"tie_weights": True}),
    "lstm-bidirectional": ("lstm", "seq_mnist", {"mode": "row"}, {"bidirectional": True, "num_layers": 2}, {}),
    "indrnn-last_classification": ("indrnn", "seq_mnist", {"mode": "row"}, {"num_layers": 2}, {}),
    "phased_lstm-timestamps": ("phased_lstm", "frequency", {"train_size": 8, "valid_size": 4}, {"ratio_on": 0.5}, {}),
    "rhn-step_classification": ("rhn", "copy", {"length": 4, "train_size": 8, "valid_size": 4}, {"depth": 2}, {}),
    "unfolded_lstm-vector": ("unfolded_lstm", "mnist_vector", {}, {"depth": 3}, {}),
}
TOLERANCE = 1e-5


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    cell, task_name, task_options, cell_options, model_options = CASES[request.param]
    task = make_task(task_name, task_options)
    spec = task.spec(task.prepare(None, 0))
    torch.manual_seed(0)
    model = build_model(cell, spec, 6, **cell_options, **model_options)
    record = ModelRecord(model.state_dict(), cell, 6, cell_options, model_options, spec, params_hash="abc")
    folder = tmp_path_factory.mktemp(request.param)
    metadata = {"cell": cell, "task": task_name, "hidden_size": "6", "params_hash": "abc", "git_commit": "def"}
    paths = {}
    for graph in record.build().graphs:
        paths[graph] = onnx_export.export_graph(onnx_export.exportable(record, graph), graph, folder / f"{graph}.onnx", metadata)
    return {"record": record, "paths": paths, "reference": record.build(fused=False), "folder": folder}


def _session(path: Path, provider: str = runtime.CPU) -> onnxruntime.InferenceSession:
    return runtime.open_session(path, provider)


def _run(session: onnxruntime.InferenceSession, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    return session.run(None, {spec.name: tensor.numpy() for spec, tensor in zip(session.get_inputs(), inputs)})


def _inputs(reference: torch.nn.Module, graph: str, batch: int, steps: int | None) -> tuple[torch.Tensor, ...]:
    """Random inputs, the initial state too: a zero state would hide states swapped or misplaced."""
    inputs = onnx_export.example_inputs(reference, batch, steps)
    if graph == "vector":
        return inputs
    given = 1 + reference.layer.takes_time
    return (*inputs[:given], *(torch.randn_like(state) for state in inputs[given:]))


def _torch(reference: torch.nn.Module, graph: str, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    wrapper = {"sequence": onnx_export.SequenceGraph, "step": onnx_export.StepGraph, "vector": onnx_export.VectorGraph}[graph]
    with torch.no_grad():
        outputs = wrapper(reference)(*inputs)
    return [t.numpy() for t in (outputs if isinstance(outputs, tuple) else (outputs,))]


@pytest.mark.parametrize("provider", [
    runtime.CPU,
    pytest.param(runtime.CUDA, marks=[pytest.mark.cuda, pytest.mark.skipif(not runtime.cuda_usable(), reason="needs onnxruntime-gpu and a CUDA GPU")]),
])
def test_export_parity_with_torch_at_several_batch_and_length(exported: dict, provider: str) -> None:
    reference = exported["reference"]
    for graph, path in exported["paths"].items():
        session = _session(path, provider)
        shapes = [(1, 1), (3, 5), (2, 50)] if graph == "sequence" else [(1, None), (4, None)]
        for batch, steps in shapes:  # T = 5 was the export example; 1 and 50 were never seen
            inputs = _inputs(reference, graph, batch, steps)
            for got, want in zip(_run(session, inputs), _torch(reference, graph, inputs), strict=True):
                assert got.shape == want.shape
                assert np.abs(got - want).max() <= TOLERANCE, (graph, batch, steps)


def test_export_keeps_batch_and_time_symbolic_without_unrolling(exported: dict) -> None:
    for graph, path in exported["paths"].items():
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        x = model.graph.input[0].type.tensor_type.shape.dim
        assert x[0].dim_param, f"{graph}: batch must be symbolic"
        if graph == "sequence":
            assert x[1].dim_param, "the time axis of x must be symbolic in the saved graph"
            prediction = model.graph.output[0].type.tensor_type.shape.dim
            if len(prediction) == 3:  # per-step heads: the output's time axis too
                assert prediction[1].dim_param == x[1].dim_param
            ops = [node.op_type for node in model.graph.node]
            layer = exported["reference"].layer
            props = {p.key: p.value for p in model.metadata_props}
            if getattr(layer.cell_type, "runs_on_torch_lstm", False):  # lstm, chrono_lstm: ONNX's LSTM, both directions in one node
                assert (ops.count("LSTM"), ops.count("Scan"), props["recurrence"]) == (layer.num_layers, 0, "ONNX LSTM")
            else:
                assert (ops.count("Scan"), props["recurrence"]) == (layer.num_layers * layer.num_directions, "ONNX Scan")


def test_step_graph_looped_over_time_equals_the_sequence_graph(exported: dict) -> None:
    if "step" not in exported["paths"]:
        assert set(exported["paths"]) <= {"vector", "sequence"}
        return
    reference = exported["reference"]
    sequence, step = _session(exported["paths"]["sequence"]), _session(exported["paths"]["step"])
    inputs = _inputs(reference, "sequence", 2, 7)
    whole = _run(sequence, inputs)
    takes_time = reference.layer.takes_time
    x, times = inputs[0], inputs[1] if takes_time else None
    state = [t.numpy() for t in inputs[1 + takes_time :]]
    predictions = []
    for t in range(x.shape[1]):
        feeds = [x[:, t].numpy()] + ([times[:, t].numpy()] if takes_time else []) + state
        prediction, *state = step.run(None, {spec.name: value for spec, value in zip(step.get_inputs(), feeds)})
        predictions.append(prediction)
    for got, want in zip(state, whole[1:]):
        assert np.abs(got - want).max() <= TOLERANCE
    if whole[0].ndim == 3:  # per-step heads: every step's prediction
        assert np.abs(np.stack(predictions, axis=1) - whole[0]).max() <= TOLERANCE
    else:  # last-step heads: the last step's prediction
        assert np.abs(predictions[-1] - whole[0]).max() <= TOLERANCE


def test_export_writes_one_self_contained_file_with_metadata(exported: dict) -> None:
    assert sorted(p.name for p in exported["folder"].iterdir()) == sorted(p.name for p in exported["paths"].values())
    for graph, path in exported["paths"].items():
        model = onnx.load(str(path), load_external_data=False)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        props = {p.key: p.value for p in model.metadata_props}
        assert props["cell"] == exported["record"].cell and props["graph"] == graph
        assert {"task", "hidden_size", "params_hash", "git_commit"} <= set(props)
        if graph != "sequence":
            assert props["recurrence"] == "no time loop"
        # Servers refuse to stream a model whose outputs depend on later steps.
        layer = getattr(exported["reference"], "layer", None)
        assert props["bidirectional"] == ("true" if layer is not None and layer.bidirectional else "false")
        meaning = json.loads(props["io"])
        assert list(meaning["inputs"]) == [i.name for i in model.graph.input]
        assert list(meaning["outputs"]) == [o.name for o in model.graph.output]


def test_the_zero_state_graph_is_the_sequence_graph_from_a_fresh_start(exported: dict) -> None:
    """What MLflow serves: state inputs gone, zeros fed inside; the same outputs as the sequence
    graph given zero states, at a batch and length the export never saw."""
    path = exported["paths"].get("sequence") or exported["paths"]["vector"]
    proto = onnx_export.with_zero_state(onnx.load(str(path)))
    fresh = onnxruntime.InferenceSession(proto.SerializeToString(), providers=[runtime.CPU])
    full = _session(path)
    reference = exported["reference"]
    given = 1 if "vector" in exported["paths"] else 1 + reference.layer.takes_time
    assert [i.name for i in fresh.get_inputs()] == [i.name for i in full.get_inputs()][:given]
    assert [o.name for o in fresh.get_outputs()] == [o.name for o in full.get_outputs()]
    inputs = onnx_export.example_inputs(reference, 3, None if "vector" in exported["paths"] else 7)
    for got, want in zip(_run(fresh, inputs[:given]), _run(full, inputs), strict=True):
        assert got.shape == want.shape and np.abs(got - want).max() == 0.0
