"""ONNX export: parity with torch for every cell and head, dynamic batch and time, streaming steps, metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from rnnzoo.pipeline import onnx_export, runtime, triton_repository
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


# The Triton Inference Server model repository (rnnzoo export --triton DIR).

def _triton_schema() -> Any:
    """Triton's model_config.proto (its ModelConfig message and DataType enum) as tritonclient ships
    it, loaded from its file: tritonclient.grpc's package imports grpc, which the schema does not need."""
    import importlib.util

    found = importlib.util.find_spec("tritonclient")
    assert found is not None and found.submodule_search_locations, "tritonclient (the dev extra) is installed"
    path = Path(next(iter(found.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ONNX_TYPES = {"TYPE_FP32": onnx.TensorProto.FLOAT, "TYPE_INT64": onnx.TensorProto.INT64}


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


@pytest.fixture
def triton(exported: dict, tmp_path: Path) -> dict:
    written = triton_repository.write("exp", exported["paths"], tmp_path)
    return {"repository": tmp_path, "written": written}


def test_triton_configs_parse_with_tritons_schema_and_match_their_graphs(exported: dict, triton: dict) -> None:
    from google.protobuf import text_format

    repository = triton["repository"]
    assert sorted(p.name for p in repository.iterdir()) == sorted(f"exp-{graph}" for graph in exported["paths"])
    assert sorted(triton["written"]) == sorted(repository / f"exp-{graph}" / "1" / "model.onnx" for graph in exported["paths"])
    schema = _triton_schema()
    for graph in exported["paths"]:
        folder = repository / f"exp-{graph}"
        assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt"]
        config = text_format.Parse((folder / "config.pbtxt").read_text(), schema.ModelConfig())  # unknown fields or enums raise
        assert config.name == folder.name and config.backend == "onnxruntime" and config.max_batch_size > 0
        proto = onnx.load(str(folder / "1" / "model.onnx"))
        inputs = {value.name: value for value in proto.graph.input}
        outputs = {value.name: value for value in proto.graph.output}
        meaning = json.loads({entry.key: entry.value for entry in proto.metadata_props}["io"])  # says what this graph takes
        assert (list(meaning["inputs"]), list(meaning["outputs"])) == (list(inputs), list(outputs))
        assert all(text.count("(B, ") == 1 for name, text in meaning["inputs"].items() if name.startswith("state_"))
        assert all("(B, " in text for name, text in meaning["outputs"].items() if name.startswith("final_"))
        for entry, graph_values in [*((e, inputs) for e in config.input), *((e, outputs) for e in config.output)]:
            value = graph_values[entry.name]
            assert value.type.tensor_type.elem_type == _ONNX_TYPES[schema.DataType.Name(entry.data_type)]
            shape = _dims(value)
            assert shape[0] == -1, "Triton batches on the first axis"
            # One value a row (a token id, a timestamp): dims [1] reshaped to the graph's none.
            assert (list(entry.dims), entry.HasField("reshape")) == ((shape[1:], False) if len(shape) > 1 else ([1], True))
            assert list(entry.reshape.shape) == []
        if graph != "step":
            assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
            assert [e.name for e in config.input] == [n for n in inputs], "the sequence model starts from zeros: no state inputs"
            continue
        assert config.WhichOneof("scheduling_choice") == "sequence_batching"
        states = config.sequence_batching.state
        state_inputs = [name for name in inputs if name.startswith("state_")]
        assert [s.input_name for s in states] == state_inputs and state_inputs, "every state implicit"
        assert [e.name for e in config.input] == [n for n in inputs if n not in state_inputs], "a client sends no state"
        assert [e.name for e in config.output] == ["prediction"]
        for state in states:
            assert state.output_name in outputs and _dims(inputs[state.input_name])[1:] == list(state.dims) == _dims(outputs[state.output_name])[1:]
            assert _dims(inputs[state.input_name])[0] == -1
            (initial,) = state.initial_state
            assert initial.zero_data and list(initial.dims) == list(state.dims) and initial.data_type == state.data_type
        assert config.sequence_batching.max_sequence_idle_microseconds >= 10_000_000


def test_triton_models_compute_what_the_exported_graphs_compute(exported: dict, triton: dict) -> None:
    repository, reference = triton["repository"], exported["reference"]
    for graph, path in exported["paths"].items():
        exported_session = _session(path)
        triton_session = _session(repository / f"exp-{graph}" / "1" / "model.onnx")
        given = 1 if graph == "vector" else 1 + reference.layer.takes_time
        names = [i.name for i in exported_session.get_inputs()]
        if graph == "step":  # three steps as Triton runs them: each step's final state is the next one's state, zeros first
            state = {name: np.zeros_like(v.numpy()).swapaxes(0, 1) for name, v in zip(names[given:], _inputs(reference, graph, 3, None)[given:])}
            time_major = {name: value.swapaxes(0, 1) for name, value in state.items()}
            for _ in range(3):
                fed = {name: t.numpy() for name, t in zip(names, _inputs(reference, graph, 3, None)[:given])}
                expected = exported_session.run(None, {**fed, **time_major})
                got = triton_session.run(None, {**fed, **state})
                np.testing.assert_allclose(got[0], expected[0], rtol=TOLERANCE, atol=TOLERANCE)
                outs = [o.name for o in triton_session.get_outputs()]
                state = {f"state_{o.removeprefix('final_')}": v for o, v in zip(outs[1:], got[1:])}
                time_major = {f"state_{o.removeprefix('final_')}": v for o, v in zip(outs[1:], expected[1:])}
                for name in state:
                    np.testing.assert_allclose(state[name], time_major[name].swapaxes(0, 1), rtol=TOLERANCE, atol=TOLERANCE)
            continue
        inputs = _inputs(reference, graph, 3, None if graph == "vector" else 4)
        fed = {name: t.numpy() for name, t in zip(names, inputs[:given])}
        zeros = {name: np.zeros_like(t.numpy()) for name, t in zip(names[given:], inputs[given:])}
        expected = exported_session.run(None, {**fed, **zeros})
        got = triton_session.run(None, fed)
        np.testing.assert_allclose(got[0], expected[0], rtol=TOLERANCE, atol=TOLERANCE)
        for g, e in zip(got[1:], expected[1:]):
            np.testing.assert_allclose(g, e.swapaxes(0, 1), rtol=TOLERANCE, atol=TOLERANCE)


def test_a_changed_graph_adds_a_triton_version_and_an_unchanged_one_none(exported: dict, triton: dict) -> None:
    repository = triton["repository"]
    configs = {p: p.read_text() for p in repository.glob("*/config.pbtxt")}
    next(iter(configs)).unlink()  # a config lost (or written by another rnnzoo) is written again, alone
    assert triton_repository.write("exp", exported["paths"], repository) == []
    assert {p: p.read_text() for p in repository.glob("*/config.pbtxt")} == configs
    graph = next(iter(exported["paths"]))
    latest = repository / f"exp-{graph}" / "1" / "model.onnx"
    changed = onnx.load(str(latest))
    onnx.helper.set_model_props(changed, {"note": "another export"})
    onnx.save(changed, str(latest))  # now differs from what the export prepares
    assert triton_repository.write("exp", exported["paths"], repository) == [repository / f"exp-{graph}" / "2" / "model.onnx"]
    assert (repository / f"exp-{graph}" / "2" / "model.onnx").read_bytes() != latest.read_bytes()
