"""What the server refuses that its input checks alone cannot: ONNX files `rnnzoo export` did not write (at startup),
and inputs within float32 for which the model's own arithmetic overflows (per request)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
import uvicorn
from fastapi import FastAPI
from onnx import TensorProto, helper
from typer.testing import CliRunner

from rnnzoo.pipeline.cli import app
from tests.pipeline.serve.asgi import call

# What `rnnzoo export` writes (onnx_export.export_graph), for files that have the metadata but not the inputs.
EXPORT_PROPS = {"cell": "janet", "task": "adding", "recurrence": "Loop", "io": "{}", "bidirectional": "false"}


def _identity(folder: Path, shape: list[int | str], props: dict[str, str] | None = None, states: int = 0) -> Path:
    """An ONNX file of Identity nodes: ``x`` -> ``prediction`` of ``shape``, and each ``state_*`` -> ``final_*``."""
    pairs = [("x", "prediction", shape)] + [(f"state_{i}", f"final_{i}", [1, "B", 4]) for i in range(states)]
    inputs = [helper.make_tensor_value_info(a, TensorProto.FLOAT, dims) for a, _, dims in pairs]
    outputs = [helper.make_tensor_value_info(b, TensorProto.FLOAT, dims) for _, b, dims in pairs]
    graph = helper.make_graph([helper.make_node("Identity", [a], [b]) for a, b, _ in pairs], "foreign", inputs, outputs)
    model = helper.make_model(graph)
    if props is not None:
        helper.set_model_props(model, props)
    path = folder / "foreign.onnx"
    onnx.save(model, str(path))
    return path


# case -> (x's shape, metadata, state inputs; what the refusal gives as the reason)
FOREIGN: dict[str, tuple[list[int | str], dict[str, str] | None, int, str]] = {
    "vectors, no metadata": (["N", 3], None, 0, "no metadata cell, graph, recurrence, io"),
    "sequences of unknown width, no metadata": (["N", "T", "F"], None, 0, "no metadata cell, graph, recurrence, io"),
    "metadata without graph": (["N", "T", 3], {"cell": "janet", "recurrence": "Loop", "io": "{}"}, 1, "no metadata graph"),
    "a sequence graph of vectors": (["N", 3], {**EXPORT_PROPS, "graph": "sequence"}, 1, "not what a sequence graph takes"),
    "a sequence graph of unknown width": (["N", "T", "F"], {**EXPORT_PROPS, "graph": "sequence"}, 1, "no fixed feature size"),
    "a sequence graph without state": (["N", "T", 3], {**EXPORT_PROPS, "graph": "sequence"}, 0, "without state inputs"),
    "a vector graph of sequences": (["N", "T", 3], {**EXPORT_PROPS, "graph": "vector"}, 0, "not what a vector graph takes"),
    "metadata io that is not JSON": (["N", 3], {**EXPORT_PROPS, "graph": "vector", "io": "{"}, 0, "io is not JSON"),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_serve_refuses_an_onnx_file_rnnzoo_export_did_not_write(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shape, props, states, reason = FOREIGN[case]
    path = _identity(tmp_path, shape, props, states)
    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **options: served.append(application))
    result = CliRunner().invoke(app, ["serve", str(path)])
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and result.output.count("error:") == 1
    assert f"{path} is not a graph `rnnzoo export` wrote" in output and reason in output
    assert not served


# Within float32 (the input checks pass them), but an unsquashed ReLU recurrence overflows on them.
LARGE = [[3e38, 3e38]] * 5
OVERFLOW = "the model's output is not finite"


@pytest.mark.parametrize("return_state", [False, True])
def test_predict_refuses_inputs_whose_outputs_are_not_finite(app_for: Callable[..., FastAPI], return_state: bool) -> None:
    reply = call(app_for("indrnn"), "POST", "/predict", {"sequences": [LARGE, [[0.5, 1.0]]], "return_state": return_state})
    assert reply.status in (400, 422), reply.body
    assert OVERFLOW in reply.detail and "too large" in reply.detail
    assert b"null" not in reply.body


def test_predict_still_answers_large_inputs_the_model_can_take(app_for: Callable[..., FastAPI]) -> None:
    reply = call(app_for("indrnn"), "POST", "/predict", {"sequences": [[[3e38, -3e38]]], "return_state": True})
    assert reply.status == 200, reply.body
    assert b"null" not in reply.body


def test_a_session_step_whose_outputs_are_not_finite_is_refused_and_leaves_the_session_as_it_was(
        app_for: Callable[..., FastAPI]) -> None:
    served = app_for("indrnn")
    route = f"/sessions/{call(served, 'POST', '/sessions').json()['session_id']}/steps"
    first = call(served, "POST", route, {"steps": [[0.5, 1.0]]})
    assert first.status == 200, first.body
    refused = call(served, "POST", route, {"steps": LARGE})
    assert refused.status in (400, 422), refused.body
    assert OVERFLOW in refused.detail
    after = call(served, "POST", route, {"steps": [[0.25, 0.0]]})
    whole = call(served, "POST", "/predict", {"sequences": [[[0.5, 1.0], [0.25, 0.0]]]})
    assert after.status == 200 and after.json()["steps_seen"] == 2
    assert after.json()["predictions"] == pytest.approx(whole.json()["predictions"][0], abs=1e-6)
