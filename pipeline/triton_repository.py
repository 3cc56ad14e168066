"""The exported graphs as an NVIDIA Triton Inference Server model repository (``rnnzoo export EXP --triton DIR``).

Triton (``tritonserver --model-repository DIR``) cannot run here; what it reads is written to its
documented schema (``model_config.proto``; a test parses every ``config.pbtxt`` with Triton's own
``ModelConfig`` message) and each graph is checked against its config by onnxruntime.

- ``DIR/<exp>-step``: the step graph under Triton's **sequence batcher with implicit state**: a
  client sends one step's ``x`` (and ``times``) with a sequence id and start/end flags; Triton
  keeps the recurrent state between a sequence's requests (``sequence_batching.state``: input
  ``state_<f>`` takes the output ``final_<f>`` of the sequence's previous step; zeros at its start).
  Triton batches every tensor on its first axis, so the state is batch-first in this graph,
  ``(B, L·D, H)``: the step graph with a Transpose at each state input and output (the rest of
  the graph is the exported one, node for node).
- ``DIR/<exp>-sequence``: the whole-sequence graph from a zero state (no state inputs), batch-first
  final state, under the dynamic batcher (requests of one length are batched).
- ``DIR/<exp>-vector``: the vector graph (``unfolded_lstm``), dynamic batching.

Each model folder holds ``config.pbtxt`` and ``<version>/model.onnx``; an export whose graph
differs from the latest version's adds the next version (Triton serves the latest by default).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from rnnzoo.pipeline import onnx_export, outputs

# Sequences (step model) or requests (the others) Triton runs as one batch.
MAX_BATCH_SIZE = 64
# A streaming sequence idle this long is ended and its state dropped (Triton's default is 1 s,
# shorter than a person between two steps).
MAX_SEQUENCE_IDLE_MICROSECONDS = 60_000_000
TIME_MAJOR_SUFFIX = "__time_major"

_TRITON_TYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.DOUBLE: "TYPE_FP64", onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16", onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}


class Enum(str):
    """A protobuf enum value: written bare in text format (``TYPE_FP32``), not quoted."""


def to_pbtxt(message: Mapping[str, Any], indent: str = "") -> str:
    """Protobuf text format of a message given as a dict: str quoted, :class:`Enum` bare, lists
    of scalars as ``[a, b]``, lists of messages as repeated ``{ }`` blocks."""
    lines = []
    for key, value in message.items():
        if isinstance(value, Mapping):
            lines += [f"{indent}{key} {{", to_pbtxt(value, indent + "  "), f"{indent}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            lines += [f"{indent}{key} [", ",\n".join(f"{indent}  {{\n{to_pbtxt(item, indent + '    ')}\n{indent}  }}" for item in value), f"{indent}]"]
        elif isinstance(value, list):
            lines.append(f"{indent}{key}: [ {', '.join(_scalar(item) for item in value)} ]")
        else:
            lines.append(f"{indent}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node input named ``old`` becomes ``new``, in subgraphs (a Scan's body reads outer names) too."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                _rename_uses(subgraph, old, new)


def batch_first_state(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with its ``state_*`` inputs and ``final_*`` outputs ``(B, L·D, H)`` instead of
    ``(L·D, B, H)``: a Transpose after each such input and before each such output."""
    proto = copy.deepcopy(proto)
    graph = proto.graph
    head, tail = [], []
    for value in graph.input:
        if value.name.startswith("state_"):
            inner = value.name + TIME_MAJOR_SUFFIX
            _rename_uses(graph, value.name, inner)
            head.append(onnx.helper.make_node("Transpose", [value.name], [inner], perm=[1, 0, 2]))
            _swap_first_axes(value)
    for value in graph.output:
        if value.name.startswith("final_"):
            inner = value.name + TIME_MAJOR_SUFFIX
            for node in graph.node:
                node.output[:] = [inner if name == value.name else name for name in node.output]
            _rename_uses(graph, value.name, inner)
            tail.append(onnx.helper.make_node("Transpose", [inner], [value.name], perm=[1, 0, 2]))
            _swap_first_axes(value)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(head + nodes + tail)  # ONNX wants each node after the nodes it reads
    del graph.value_info[:]  # shapes inferred for the old names; onnxruntime infers them again
    onnx.checker.check_model(proto)
    return proto


def _swap_first_axes(value: onnx.ValueInfoProto) -> None:
    dims = value.type.tensor_type.shape.dim
    first, second = copy.deepcopy(dims[0]), copy.deepcopy(dims[1])
    dims[0].CopyFrom(second)
    dims[1].CopyFrom(first)


def _tensor(value: onnx.ValueInfoProto) -> dict[str, Any]:
    """A config ``input``/``output`` entry: Triton's dims leave out the batch axis (the first)."""
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type not in _TRITON_TYPES:
        raise ValueError(f"{value.name}: ONNX element type {tensor_type.elem_type} has no Triton data type")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim][1:]
    entry: dict[str, Any] = {"name": value.name, "data_type": Enum(_TRITON_TYPES[tensor_type.elem_type])}
    if dims:
        entry["dims"] = dims
    else:  # one value a batch row (a token id, a timestamp): Triton wants a dim, the graph none
        entry.update(dims=[1], reshape={"shape": []})
    return entry


def model_config(name: str, proto: onnx.ModelProto, graph: str) -> dict[str, Any]:
    """The ``config.pbtxt`` of ``proto`` (prepared by :func:`prepared`) as model ``name``."""
    inputs = [value for value in proto.graph.input if not value.name.startswith("state_")]
    outputs_ = [value for value in proto.graph.output if graph != "step" or not value.name.startswith("final_")]
    config: dict[str, Any] = {
        "name": name, "backend": "onnxruntime", "max_batch_size": MAX_BATCH_SIZE,
        "input": [_tensor(value) for value in inputs], "output": [_tensor(value) for value in outputs_],
    }
    if graph != "step":
        config["dynamic_batching"] = {}
        return config
    states = []
    for value in proto.graph.input:
        if value.name.startswith("state_"):
            tensor = _tensor(value)
            state = {"input_name": value.name, "output_name": "final_" + value.name.removeprefix("state_"),
                     "data_type": tensor["data_type"], "dims": tensor["dims"]}
            state["initial_state"] = [{"name": "zeros", "data_type": tensor["data_type"], "dims": tensor["dims"], "zero_data": True}]
            states.append(state)
    config["sequence_batching"] = {"max_sequence_idle_microseconds": MAX_SEQUENCE_IDLE_MICROSECONDS, "state": states}
    return config


def prepared(proto: onnx.ModelProto, graph: str) -> onnx.ModelProto:
    """The exported ``graph`` as Triton runs it: batch-first state; the sequence graph from zeros;
    the file's ``io`` metadata (what each input and output means) saying so."""
    if graph == "sequence":
        proto = onnx_export.with_zero_state(proto)
    if graph not in ("step", "sequence"):
        return proto
    proto = batch_first_state(proto)
    props = {entry.key: entry.value for entry in proto.metadata_props}
    if "io" in props:
        names = {value.name for value in [*proto.graph.input, *proto.graph.output]}
        meaning = json.loads(props["io"])
        for side in ("inputs", "outputs"):
            meaning[side] = {
                name: re.sub(r"\((\d+), B, H\)", r"(B, \1, H)", text) + (", held by Triton between a sequence's steps" if name.startswith("state_") else "")
                for name, text in meaning[side].items() if name in names
            }
        onnx.helper.set_model_props(proto, {**props, "io": json.dumps(meaning)})
    return proto


def _latest_version(folder: Path) -> int:
    versions = [int(p.name) for p in folder.glob("*") if p.is_dir() and p.name.isdigit()] if folder.is_dir() else []
    return max(versions, default=0)


def write(experiment: str, graphs: Mapping[str, Path], repository: Path) -> list[Path]:
    """Write (or add a version to) one Triton model ``<experiment>-<graph>`` per exported graph
    (``{"sequence": path, "step": path}``, as ``rnnzoo export`` wrote them) under ``repository``;
    returns the model files written, none for a graph unchanged since the latest version. The
    models appear together or not at all."""
    # Every graph prepared (and checked) before anything is staged: a graph that fails leaves no folder.
    models = {graph: prepared(onnx.load(str(path)), graph) for graph, path in graphs.items()}
    written = []
    with outputs.together() as staged:
        for graph, proto in models.items():
            name = f"{experiment}-{graph}"
            folder = repository / name
            config = to_pbtxt(model_config(name, proto, graph)) + "\n"
            if not (folder / "config.pbtxt").is_file() or (folder / "config.pbtxt").read_text() != config:
                staged.file(folder / "config.pbtxt").write_text(config)
            latest = _latest_version(folder)
            content = proto.SerializeToString()
            if latest and (folder / str(latest) / "model.onnx").read_bytes() == content:
                continue
            version = folder / str(latest + 1)
            (staged.folder(version) / "model.onnx").write_bytes(content)  # the version appears whole
            written.append(version / "model.onnx")
    return written
