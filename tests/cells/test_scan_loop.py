"""``time_loop="scan"``: the same results as the Python loop, and an ONNX graph whose time axis stays dynamic."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch

from rnnzoo import cells

SEQUENCE_CELLS = [name for name in cells.names() if cells.is_sequence_model(name)]
OPTIONS = {"chrono_lstm": {"max_timescale": 10}, "phased_lstm": {"ratio_on": 0.6}, "rhn": {"depth": 2}}


def _pair(name: str, **layer_options) -> tuple[torch.nn.Module, torch.nn.Module]:
    python = cells.make(name, 3, 4, **OPTIONS.get(name, {}), **layer_options).eval()
    scanned = cells.make(name, 3, 4, time_loop="scan", **OPTIONS.get(name, {}), **layer_options).eval()
    scanned.load_state_dict(python.state_dict())
    return python, scanned


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_scan_loop_matches_python_loop(name: str) -> None:
    python, scanned = _pair(name, num_layers=2, bidirectional=True)
    x = torch.randn(3, 6, 3)
    lengths = torch.tensor([6, 2, 4])
    state = python.init_state(3)
    state = type(state)(*(torch.randn_like(field) for field in state))
    expected, expected_final = python(x, state, lengths=lengths)
    actual, actual_final = scanned(x, state, lengths=lengths)
    torch.testing.assert_close(actual, expected)
    for got, want in zip(actual_final, expected_final):
        torch.testing.assert_close(got, want)


class _Exported(torch.nn.Module):
    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, final = self.layer(x, lengths=lengths)
        return outputs, final[0]


# lstm and chrono_lstm export as ONNX's LSTM operator, not Scan, and tests/pipeline/test_export.py
# holds the phased_lstm's and rhn's Scan graphs to torch through the pipeline: those four (8-14 s
# each) run with the slow tests.
SLOW_EXPORTS = ("lstm", "chrono_lstm", "phased_lstm", "rhn")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_EXPORTS else n for n in SEQUENCE_CELLS])
def test_scan_layer_exports_with_a_dynamic_time_axis(name: str, tmp_path: Path) -> None:
    python, scanned = _pair(name, bidirectional=True)
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 3])
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        _Exported(scanned), (x, lengths), path, dynamo=True, input_names=["x", "lengths"], output_names=["outputs", "final"],
        dynamic_shapes={"x": {0: batch, 1: time}, "lengths": {0: batch}}, external_data=False,
    )
    model = onnx.load(path)
    onnx.checker.check_model(model)
    x_dims = model.graph.input[0].type.tensor_type.shape.dim
    assert x_dims[0].dim_param and x_dims[1].dim_param, "batch and time must be symbolic in the saved graph"
    assert sum(node.op_type == "Scan" for node in model.graph.node) == 2  # one per direction, no unrolled loop
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for steps in (1, 5, 50):
        x = torch.randn(3, steps, 3)
        lengths = torch.tensor([steps, max(1, steps // 2), 1])
        expected, expected_final = python(x, lengths=lengths)
        actual, actual_final = session.run(None, {"x": x.numpy(), "lengths": lengths.numpy()})
        assert abs(actual - expected.detach().numpy()).max() <= 1e-5
        assert abs(actual_final - expected_final[0].detach().numpy()).max() <= 1e-5
