"""Trained models to ONNX: a ``sequence`` graph (any batch, any length) and a ``step`` graph.

Route (chosen by measurement, see README "Export"): torch's dynamo exporter, with the time loop
as one node per layer so that the graph does not grow with T and both batch and time stay
symbolic. ``lstm`` and ``chrono_lstm`` (on ``torch.nn.LSTM``'s kernel) become ONNX's ``LSTM``
operator, one per layer, through the ``rnnzoo::lstm_stack`` operator; every other cell runs its
layer's ``time_loop="scan"``, one ONNX ``Scan`` node per layer and direction. A Python loop
would be unrolled and T fixed to the example's length; the TorchScript exporter is deprecated.

* ``sequence``: ``x`` ``(B, T, I)`` (token ids ``(B, T)`` for language models), ``times``
  ``(B, T)`` for cells that read timestamps, the initial state (zeros for a fresh start) ->
  the task's prediction and the final state.
* ``step``: one time step, ``x_t`` ``(B, I)`` (``(B,)`` ids), ``time_t`` ``(B,)``, state ->
  the step's prediction and the new state: streaming. Unidirectional models only.
* ``unfolded_lstm`` has no time axis: one ``vector`` graph, ``x`` ``(B, I)`` -> prediction.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch
from onnxscript.function_libs.torch_lib.ops.core import aten_lstm
from torch import Tensor, nn

import rnnzoo.cells.lstm_stack_op  # noqa: F401 - registers torch.ops.rnnzoo.lstm_stack
from rnnzoo.cells.checks import require_choice
from rnnzoo.pipeline import files, known_noise
from rnnzoo.pipeline.model import PredictionModule, SequenceModel, VectorModel
from rnnzoo.pipeline.model_record import ModelRecord
from rnnzoo.pipeline.tasks import Batch, TaskSpec

OPSET = 18


def _lstm_stack_to_onnx(x: Any, h0: Any, c0: Any, weights: Any, num_layers: int, bidirectional: bool) -> Any:
    # onnxscript's own translation of aten::lstm: ONNX LSTM per layer, gates reordered to ONNX's.
    return aten_lstm(x, [h0, c0], weights, True, num_layers, 0.0, False, bidirectional, True)


TRANSLATIONS: dict[Callable[..., Any], Callable[..., Any]] = {torch.ops.rnnzoo.lstm_stack.default: _lstm_stack_to_onnx}


def exportable(record: ModelRecord, graph: str) -> SequenceModel | VectorModel:
    """The trained model built for export as ``graph``.

    The sequence graph of a stack on ``torch.nn.LSTM``'s kernel keeps it (ONNX ``LSTM``); other
    sequence graphs run the ``scan`` loop (ONNX ``Scan``); a step or vector graph needs no loop.
    """
    if graph != "sequence":
        return record.build("python", fused=False)
    fused = record.build("python", fused=True)
    assert isinstance(fused, SequenceModel)  # for mypy: a sequence graph is a sequence model's
    return fused if fused.layer.runs_on_torch_lstm else record.build("scan", fused=False)


def recurrence(proto: onnx.ModelProto) -> str:
    """How a saved graph runs its time loop, read from its nodes, for the file's metadata."""
    ops = {node.op_type for node in proto.graph.node}
    return "ONNX LSTM" if "LSTM" in ops else "ONNX Scan" if "Scan" in ops else "no time loop"


class SequenceGraph(nn.Module):
    """``(x, [times], *state) -> (prediction, *final_state)`` over a whole sequence."""

    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        times, state = (rest[0], rest[1:]) if self.model.layer.takes_time else (None, rest)
        prediction, final = self.model(Batch(x, x, None, times), self.model.layer.state_type(*state))
        return (prediction, *final)


class StepGraph(nn.Module):
    """``(x_t, [time_t], *state) -> (prediction_t, *new_state)``: one streaming step."""

    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        takes_time = self.model.layer.takes_time
        times, state = (rest[0].unsqueeze(1), rest[1:]) if takes_time else (None, rest)
        prediction, new_state = self.model(Batch(x.unsqueeze(1), x, None, times), self.model.layer.state_type(*state))
        if prediction.dim() == 3:  # per-step heads: (B, 1, O) -> (B, O)
            prediction = prediction.squeeze(1)
        return (prediction, *new_state)


# No time axis: the vector graph is the plain ``x -> prediction`` module MLflow's torch flavor logs.
VectorGraph = PredictionModule


def _state_names(model: SequenceModel) -> list[str]:
    return list(model.layer.state_type._fields)


def describe(model: SequenceModel | VectorModel, graph: str) -> dict[str, dict[str, str]]:
    """What each input and output of ``graph`` means, for the file's metadata."""
    spec: TaskSpec = model.spec
    head = {
        "last_regression": "prediction (B, 1) at the last step", "last_classification": "class logits (B, C) at the last step",
        "step_classification": "class logits (B, T, C) at every step", "language_model": "next-token logits (B, T, V)",
        "vector_classification": "class logits (B, C)",
    }[spec.head]
    if not model.is_sequence:
        return {"inputs": {"x": f"input vectors (B, {spec.input_size})"}, "outputs": {"prediction": head}}
    assert isinstance(model, SequenceModel)  # for mypy: is_sequence says so
    step = graph == "step"
    x = "token ids" if spec.head == "language_model" else f"features, {spec.input_size} a step"
    inputs = {"x": f"{x}, ({'B' if step else 'B, T'}{'' if spec.head == 'language_model' else ', I'})"}
    if model.layer.takes_time:
        inputs["times"] = f"timestamps ({'B' if step else 'B, T'}), the units of training"
    layers = model.layer.num_layers * model.layer.num_directions
    for name in _state_names(model):
        inputs[f"state_{name}"] = f"initial state {name} ({layers}, B, H); zeros for a fresh start"
    outputs = {"prediction": head.replace("(B, T, ", "(B, ") if step else head}
    outputs.update({f"final_{name}": f"state {name} after the last step ({layers}, B, H)" for name in _state_names(model)})
    return {"inputs": inputs, "outputs": outputs}


def example_inputs(model: SequenceModel | VectorModel, batch: int, steps: int | None) -> tuple[Tensor, ...]:
    """Random inputs of the graph's shapes; ``steps=None`` for the step graph."""
    spec: TaskSpec = model.spec
    lead = (batch,) if steps is None else (batch, steps)
    if not model.is_sequence:
        return (torch.randn(batch, spec.input_size),)
    assert isinstance(model, SequenceModel)  # for mypy: is_sequence says so
    x = torch.randint(0, spec.input_size, lead) if spec.head == "language_model" else torch.randn(*lead, spec.input_size)
    inputs = [x]
    if model.layer.takes_time:
        inputs.append(torch.rand(*lead).cumsum(-1) * 5.0)
    inputs.extend(model.layer.init_state(batch))
    return tuple(inputs)


def graph_module(model: SequenceModel | VectorModel, graph: str) -> nn.Module:
    """The module exported (and benchmarked) as ``graph``, in eval mode: ``sequence`` or ``step``
    of a sequence model, ``vector`` of a vector model (``model.graphs`` lists which)."""
    require_choice("graph", graph, model.graphs)  # this model's graphs
    if isinstance(model, SequenceModel):
        return {"sequence": SequenceGraph, "step": StepGraph}[graph](model).eval()
    return VectorGraph(model).eval()


def export_graph(model: SequenceModel | VectorModel, graph: str, path: Path, metadata: dict[str, str]) -> Path:
    """Export ``graph`` (``sequence``, ``step`` or ``vector``) of ``model`` to one self-contained file."""
    wrapper = graph_module(model, graph)
    meaning = describe(model, graph)
    input_names, output_names = list(meaning["inputs"]), list(meaning["outputs"])
    args = example_inputs(model, 2, None if graph != "sequence" else 5)
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    dynamic: list[dict[int, Any]] = []
    for name, tensor in zip(input_names, args):
        if name.startswith("state_"):
            dynamic.append({1: batch})
        elif graph == "sequence" and name in ("x", "times"):
            dynamic.append({0: batch, 1: time})
        else:
            dynamic.append({0: batch})
    with known_noise.silenced():
        program = torch.onnx.export(
            wrapper, args, dynamo=True, opset_version=OPSET, input_names=input_names, output_names=output_names,
            # forward(x, *rest): the shapes of *rest go in one nested tuple.
            dynamic_shapes=(dynamic[0], tuple(dynamic[1:])) if len(dynamic) > 1 else (dynamic[0],), verbose=False,
            custom_translation_table=TRANSLATIONS,
        )
    assert program is not None  # None only from the TorchScript exporter (dynamo=False)
    proto = program.model_proto
    # Servers read it: a bidirectional model's outputs depend on later steps, so it cannot stream.
    bidirectional = bool(getattr(getattr(model, "layer", None), "bidirectional", False))
    props = {
        **metadata, "graph": graph, "recurrence": recurrence(proto), "io": json.dumps(meaning),
        "bidirectional": str(bidirectional).lower(),
    }
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto)
    return files.atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp), save_as_external_data=False))


ZERO_STATE_PREFIX = "rnnzoo_zero_"


def with_zero_state(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The sequence graph with its ``state_*`` inputs taken away and fed zeros inside the graph:
    ``(x, [times]) -> (prediction, *final_state)`` from a fresh start, for MLflow's signature, which
    cannot mark an input optional. The zeros take their batch size from ``x``'s first axis and
    the rest, ``(L·D, ·, H)``, from the state input's declared shape. A graph without state inputs
    (the vector graph) comes back as it is. Raises ValueError for a state input whose first or
    last axis is not a fixed size.
    """
    proto = copy.deepcopy(proto)
    graph = proto.graph
    states = [value for value in graph.input if value.name.startswith("state_")]
    if not states:
        return proto
    nodes = [
        onnx.helper.make_node("Shape", ["x"], [f"{ZERO_STATE_PREFIX}x_shape"], start=0, end=1),
    ]
    for value in states:
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 3 or not dims[0].HasField("dim_value") or not dims[2].HasField("dim_value"):
            raise ValueError(f"state input {value.name!r} must be (layers, batch, hidden) with fixed layers and hidden")
        prefix = f"{ZERO_STATE_PREFIX}{value.name}"
        layers = onnx.helper.make_tensor(f"{prefix}_layers", onnx.TensorProto.INT64, [1], [dims[0].dim_value])
        hidden = onnx.helper.make_tensor(f"{prefix}_hidden", onnx.TensorProto.INT64, [1], [dims[2].dim_value])
        graph.initializer.extend([layers, hidden])
        zero = onnx.helper.make_tensor(f"{prefix}_value", value.type.tensor_type.elem_type, [1], [0])
        nodes += [
            onnx.helper.make_node("Concat", [layers.name, f"{ZERO_STATE_PREFIX}x_shape", hidden.name], [f"{prefix}_shape"], axis=0),
            onnx.helper.make_node("ConstantOfShape", [f"{prefix}_shape"], [value.name], value=zero),
        ]
    kept = [value for value in graph.input if not value.name.startswith("state_")]
    del graph.input[:]
    graph.input.extend(kept)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)  # first: every node after reads the zeros by the input's old name
    onnx.checker.check_model(proto)
    return proto
