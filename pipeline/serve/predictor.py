"""An exported sequence (or vector) graph with the checks a server needs, and nothing HTTP.

onnxruntime keeps no state between calls: the state of a stream is passed in and out here,
and kept by the session store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import runtime


class RequestError(ValueError):
    """A request the model cannot take; the message says what is wrong."""


class Predictor:
    """Runs ``sequence.onnx`` (or ``vector.onnx``) on one or more sequences."""

    def __init__(self, path: Path, max_length: int = 10_000, threads: int = 0, provider: str | None = None) -> None:
        self.provider = provider or runtime.best_provider()
        self.session = runtime.open_session(path, self.provider, threads)
        self.path = path
        self.max_length = max_length
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {key: value for key, value in props.items() if key != "io"}
        self.io = json.loads(props.get("io", "{}"))
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.graph = props.get("graph", "sequence")
        self.tokens = inputs["x"].type == "tensor(int64)"
        self.takes_time = "times" in inputs
        self.state_names = [name for name in inputs if name.startswith("state_")]
        self.features = None if self.tokens else inputs["x"].shape[-1]
        first_state = inputs[self.state_names[0]].shape if self.state_names else None
        self.state_shape = None if first_state is None else (first_state[0], first_state[2])  # (layers, hidden)

    @property
    def streams(self) -> bool:
        return self.graph == "sequence"

    def describe(self) -> dict[str, Any]:
        return {
            **self.metadata, "graph": self.graph, "provider": self.provider, "input_features": self.features, "token_ids": self.tokens,
            "takes_times": self.takes_time, "state": self.state_names, "max_length": self.max_length, "io": self.io,
        }

    def zero_state(self, batch: int) -> list[np.ndarray]:
        layers, hidden = self.state_shape
        return [np.zeros((layers, batch, hidden), dtype=np.float32) for _ in self.state_names]

    def check_sequence(self, values: Any, times: Any = None, what: str = "sequence") -> tuple[np.ndarray, np.ndarray | None]:
        """One sequence as an array ``(T, I)`` (ids ``(T,)``; a vector ``(I,)``), validated."""
        dtype = np.int64 if self.tokens else np.float32
        try:
            array = np.asarray(values, dtype=dtype)
        except (TypeError, ValueError, OverflowError):
            raise RequestError(f"{what}: expected numbers, got {str(values)[:80]}") from None
        if array.ndim >= 1 and array.shape[0] == 0:
            raise RequestError(f"{what}: empty sequence; send at least one step")
        if self.graph == "vector":
            if array.shape != (self.features,):
                raise RequestError(f"{what}: expected a vector of {self.features} numbers, got shape {list(array.shape)}")
        else:
            expected = "(steps,) of token ids" if self.tokens else f"(steps, {self.features})"
            wanted_rank = 1 if self.tokens else 2
            if array.ndim != wanted_rank or (not self.tokens and array.shape[1] != self.features):
                raise RequestError(f"{what}: expected shape {expected}, got {list(array.shape)}")
            if array.shape[0] > self.max_length:
                raise RequestError(f"{what}: {array.shape[0]} steps is over the maximum of {self.max_length}")
        if not self.tokens and not np.isfinite(array).all():
            raise RequestError(f"{what}: NaN or infinite values are not allowed")
        if self.tokens and self.vocabulary is not None and (array.min() < 0 or array.max() >= self.vocabulary):
            raise RequestError(f"{what}: token ids must lie in [0, {self.vocabulary - 1}]")
        return array, self._check_times(times, array.shape[0] if self.graph != "vector" else 0, what)

    @property
    def vocabulary(self) -> int | None:
        if not self.tokens:
            return None
        return self.session.get_outputs()[0].shape[-1] if isinstance(self.session.get_outputs()[0].shape[-1], int) else None

    def _check_times(self, times: Any, steps: int, what: str) -> np.ndarray | None:
        if not self.takes_time:
            if times is not None:
                raise RequestError(f"{what}: this model takes no timestamps, but times were sent")
            return None
        if times is None:
            raise RequestError(f"{what}: this model ({self.metadata.get('cell')}) needs `times`, one timestamp per step")
        try:
            array = np.asarray(times, dtype=np.float32)
        except (TypeError, ValueError):
            raise RequestError(f"{what}: times must be numbers") from None
        if array.shape != (steps,) or not np.isfinite(array).all():
            raise RequestError(f"{what}: times must be {steps} finite numbers (one a step), got shape {list(array.shape)}")
        return array

    def run(self, xs: np.ndarray, times: np.ndarray | None, state: list[np.ndarray] | None) -> tuple[np.ndarray, list[np.ndarray]]:
        """``xs`` ``(B, T, ...)`` of one length -> predictions and final state."""
        feeds: dict[str, np.ndarray] = {"x": xs}
        if self.graph == "vector":
            return self.session.run(None, feeds)[0], []
        if times is not None:
            feeds["times"] = times
        state = state if state is not None else self.zero_state(xs.shape[0])
        feeds.update(zip(self.state_names, state))
        prediction, *final = self.session.run(None, feeds)
        return prediction, final
