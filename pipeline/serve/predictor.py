"""An exported sequence (or vector) graph with the checks a server needs, and nothing HTTP.

onnxruntime keeps no state between calls: the state of a stream is passed in and out here,
and kept by the session store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rnnzoo.pipeline import runtime
from rnnzoo.pipeline.serve import parse
from rnnzoo.pipeline.serve.parse import RequestError
from rnnzoo.pipeline.serve.resolve import ModelError

__all__ = ["ModelError", "NotFinite", "NotStreamable", "Predictor", "RequestError"]


class NotStreamable(RequestError):
    """A streaming call to a model whose outputs cannot be computed step by step."""


class Predictor:
    """Runs ``sequence.onnx`` (or ``vector.onnx``) on one or more sequences."""

    def __init__(self, path: Path, max_length: int = 10_000, threads: int = 0, provider: str | None = None) -> None:
        self.provider = provider or runtime.best_provider()
        self.session = _open(path, self.provider, threads)
        self.path = path
        self.max_length = max_length
        props = self.session.get_modelmeta().custom_metadata_map
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.graph = props.get("graph")
        if self.graph == "step":
            raise ModelError(f"{path} is the one-step graph (step.onnx): serve sequence.onnx from its folder, whose sessions stream")
        why = _not_exported(props, inputs, len(self.session.get_outputs()))
        if why:
            raise ModelError(
                f"{path} is not a graph `rnnzoo export` wrote ({why}; inputs {sorted(inputs)}): "
                "expected the sequence.onnx or vector.onnx it writes"
            )
        self.metadata = {key: value for key, value in props.items() if key != "io"}
        self.io = json.loads(props["io"])
        self.tokens = inputs["x"].type == "tensor(int64)"
        self.takes_time = "times" in inputs
        self.state_names = [name for name in inputs if name.startswith("state_")]
        self.features = None if self.tokens else inputs["x"].shape[-1]
        first_state = inputs[self.state_names[0]].shape if self.state_names else None
        self.state_shape = None if first_state is None else (first_state[0], first_state[2])  # (layers, hidden)
        vocabulary = self.session.get_outputs()[0].shape[-1]  # next-token logits (B, T, V)
        if self.tokens and not isinstance(vocabulary, int):
            raise ModelError(f"{path} takes token ids but its output does not give the vocabulary size (dimension {vocabulary!r})")
        self.vocabulary: int | None = vocabulary if self.tokens else None
        # What each step of x is checked against: the vocabulary's size for ids, else the features a step.
        self.width: int = vocabulary if self.tokens else inputs["x"].shape[-1]
        self.stream_refusal = self._why_not_streaming()

    @property
    def streams(self) -> bool:
        return self.stream_refusal is None

    def describe(self) -> dict[str, Any]:
        return {
            **self.metadata, "graph": self.graph, "provider": self.provider, "input_features": self.features, "token_ids": self.tokens,
            "vocabulary": self.vocabulary, "takes_times": self.takes_time, "state": self.state_names,
            "max_length": self.max_length, "streaming": self.streams, "streaming_refused_because": self.stream_refusal, "io": self.io,
        }

    def _why_not_streaming(self) -> str | None:
        """Why sessions cannot give the outputs /predict gives, or ``None`` when they can."""
        if self.graph == "vector":
            return "this model has no time axis (a vector graph): sessions need a sequence model; send vectors to /predict"
        cannot = "so a stream cannot answer before the sequence ends; send whole sequences to /predict"
        if self.metadata.get("bidirectional", "").lower() == "true":
            return f"this model is bidirectional: its outputs depend on later steps, {cannot}"
        # Exports without that key (and anything else that reads ahead): a probe fed whole and in two pieces must agree.
        gap = self._stream_gap()
        if gap > STREAM_TOLERANCE:
            return (f"this model's outputs depend on later steps, as a bidirectional model's do: fed in two pieces, "
                    f"a probe sequence gets outputs {gap:.3g} away from the whole sequence's, {cannot}")
        return None

    def _stream_gap(self, steps: int = 6) -> float:
        """Largest gap, relative to the output's scale, between a random sequence run whole and in two pieces (state carried)."""
        rng = np.random.default_rng(0)
        if self.tokens:
            x = rng.integers(0, self.width, (1, steps), dtype=np.int64)  # (1, T)
        else:
            x = rng.standard_normal((1, steps, self.width)).astype(np.float32)  # (1, T, I)
        times = np.cumsum(rng.random((1, steps)) + 0.5, axis=1).astype(np.float32) if self.takes_time else None
        half = steps // 2
        try:
            whole, whole_final = self.run(x, times, None)
            first, state = self.run(x[:, :half], None if times is None else times[:, :half], None)
            second, final = self.run(x[:, half:], None if times is None else times[:, half:], state)
        except NotFinite:
            raise ModelError(f"{self.path} gives outputs that are not finite (NaN or infinity) for random inputs") from None
        pieces = np.concatenate([first, second], axis=1) if whole.ndim == 3 else second  # per-step heads: (B, T, O)
        pairs = [(pieces, whole), *zip(final, whole_final)]
        return max(float(np.abs(a - b).max() / (1.0 + np.abs(b).max())) for a, b in pairs)

    def zero_state(self, batch: int) -> list[np.ndarray]:
        assert self.state_shape is not None, "a graph without state inputs has no zero state"
        layers, hidden = self.state_shape
        return [np.zeros((layers, batch, hidden), dtype=np.float32) for _ in self.state_names]

    def check_sequence(
        self, values: Any, times: Any = None, what: str = "sequence", times_what: str = "times"
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One sequence as an array ``(T, I)`` (ids ``(T,)``; a vector ``(I,)``), validated; errors name ``what``, ``times_what``."""
        if self.graph == "vector":
            array = parse.vector(values, self.width, what)
        elif self.tokens:
            array = parse.token_ids(values, self.width, what, self.max_length)
        else:
            array = parse.vectors(values, self.width, what, self.max_length)
        return array, self._check_times(times, array.shape[0] if self.graph != "vector" else 0, times_what)

    def _check_times(self, times: Any, steps: int, what: str) -> np.ndarray | None:
        if not self.takes_time:
            if times is not None:
                raise RequestError(f"{what}: this model takes no timestamps, but times were sent")
            return None
        if times is None:  # the step indices, counted on from the state's next timestamp (see run)
            return None
        return parse.timestamps(times, steps, what)

    def run(self, xs: np.ndarray, times: np.ndarray | None, state: list[np.ndarray] | None) -> tuple[np.ndarray, list[np.ndarray]]:
        """``xs`` ``(B, T, ...)`` of one length -> predictions and final state."""
        feeds: dict[str, np.ndarray] = {"x": xs}
        if self.graph != "vector":
            state = state if state is not None else self.zero_state(xs.shape[0])
            if self.takes_time and times is None:
                times = self.default_times(state, xs.shape[1])
            if times is not None:
                feeds["times"] = times
            feeds.update(zip(self.state_names, state))
        prediction, *final = self.session.run(None, feeds)
        # JSON would carry NaN and infinity as null; a stream must not keep such a state either.
        for name, array in (("predictions", prediction), *zip(self.state_names, final)):
            if not np.isfinite(array).all():
                raise NotFinite(
                    f"the model's output is not finite (NaN or infinity in {name}) for these inputs: "
                    "they are likely too large for it (its arithmetic overflows float32); send smaller values"
                )
        return prediction, final


    def default_times(self, state: list[np.ndarray], steps: int) -> np.ndarray:
        """Timestamps ``(B, T)`` where a request sends none, as the layer numbers its steps: the step
        indices after the state's next timestamp (``state_time``; 0, 1, ... from a fresh state)."""
        named = dict(zip(self.state_names, state))
        start = named["state_time"][0, :, 0] if "state_time" in named else np.zeros(state[0].shape[1], dtype=np.float32)
        return (start[:, None] + np.arange(steps, dtype=np.float32)).astype(np.float32)


class NotFinite(RequestError):
    """Inputs the checks allow, for which the model's outputs or state overflow to infinity or NaN."""


# What `rnnzoo export` writes into every graph (onnx_export.export_graph), beside the stage's own keys.
EXPORT_METADATA = ("cell", "graph", "recurrence", "io")


def _not_exported(props: dict[str, str], inputs: dict[str, Any], outputs: int) -> str | None:
    """Why a graph is not one `rnnzoo export` wrote (its metadata, or inputs unlike its ``graph``), or ``None``."""
    missing = [key for key in EXPORT_METADATA if key not in props]
    if missing:
        return f"no metadata {', '.join(missing)}"
    graph = props["graph"]
    if graph not in ("sequence", "vector"):
        return f"graph {graph!r}"
    try:
        json.loads(props["io"])
    except ValueError:
        return "its metadata io is not JSON"
    if "x" not in inputs:
        return "no input x"
    x = inputs["x"]
    tokens = x.type == "tensor(int64)"
    rank = 2 if graph == "vector" or tokens else 3  # (B, I), (B, T) ids, (B, T, I)
    if len(x.shape) != rank or (graph == "vector" and tokens):
        return f"input x of shape {x.shape} and type {x.type}, not what a {graph} graph takes"
    if not tokens and not isinstance(x.shape[-1], int):
        return f"input x has no fixed feature size (shape {x.shape})"
    if graph == "vector":
        return None
    states = [name for name in inputs if name.startswith("state_")]
    if not states:
        return "a sequence graph without state inputs (state_*)"
    shapes = {tuple(inputs[name].shape[i] for i in (0, 2)) if len(inputs[name].shape) == 3 else None for name in states}
    layers_hidden = next(iter(shapes))
    if len(shapes) != 1 or layers_hidden is None or not all(isinstance(size, int) for size in layers_hidden):
        return f"state inputs not of one shape (layers, B, hidden): {[inputs[name].shape for name in states]}"
    if outputs != 1 + len(states):
        return f"{outputs} outputs for {len(states)} state inputs (a prediction and a final state each)"
    return None


# Pieces and whole differ by float rounding (~1e-7) when a model streams; reading ahead moves outputs by far more.
STREAM_TOLERANCE = 1e-4


def _open(path: Path, provider: str, threads: int) -> Any:
    try:
        return runtime.open_session(path, provider, threads)
    except RuntimeError:
        raise  # CUDA asked for where it cannot run: runtime's message says so
    except Exception as error:  # noqa: BLE001  onnxruntime's load errors (InvalidProtobuf, ...) derive from Exception alone
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise ModelError(f"{path} is not an ONNX model onnxruntime can load ({reason})") from None
