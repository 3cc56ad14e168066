"""rnnzoo::lstm_stack: torch.nn.LSTM's kernel as one operator while exporting, with T left symbolic."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from rnnzoo import cells
from rnnzoo.cells.lstm_stack_op import lstm_stack


@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_operator_computes_what_torch_nn_lstm_does(bidirectional: bool) -> None:
    torch.manual_seed(0)
    reference = nn.LSTM(3, 5, num_layers=2, batch_first=True, bidirectional=bidirectional).eval()
    directions = 2 if bidirectional else 1
    x, h0, c0 = torch.randn(4, 7, 3), torch.randn(2 * directions, 4, 5), torch.randn(2 * directions, 4, 5)
    outputs, h, c = lstm_stack(x, h0, c0, list(reference._flat_weights), 2, bidirectional)
    with torch.no_grad():
        expected, (expected_h, expected_c) = reference(x, (h0, c0))
    assert_close(outputs, expected)
    assert_close(h, expected_h)
    assert_close(c, expected_c)


def test_the_operator_passes_torch_library_checks() -> None:
    # Schema, fake shapes and strides against the real kernel's, and dispatch under every mode.
    weights = list(nn.LSTM(3, 5, num_layers=2, batch_first=True, bidirectional=True)._flat_weights)
    args = (torch.randn(4, 7, 3), torch.randn(4, 4, 5), torch.randn(4, 4, 5), [w.detach() for w in weights], 2, True)
    torch.library.opcheck(torch.ops.rnnzoo.lstm_stack.default, args, test_utils=("test_schema", "test_faketensor"))


class _Stack(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)[0]


@pytest.mark.parametrize("name", ["lstm", "chrono_lstm"])
def test_exporting_the_fused_layer_keeps_time_symbolic_through_the_operator(name: str) -> None:
    layer = cells.make(name, 3, 4, num_layers=2, **({"max_timescale": 10.0} if name == "chrono_lstm" else {})).eval()
    assert layer.runs_on_torch_lstm
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    program = torch.export.export(_Stack(layer), (torch.randn(2, 5, 3),), dynamic_shapes=({0: batch, 1: time},), strict=False)
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert targets.count(torch.ops.rnnzoo.lstm_stack.default) == 1
    output = next(node for node in program.graph.nodes if node.op == "output").args[0][0].meta["val"]
    assert not isinstance(output.shape[1], int), "T must stay symbolic"
    x = torch.randn(3, 11, 3)  # another batch and length than the example
    assert_close(program.module()(x), layer(x)[0])


def test_eager_runs_never_reach_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = cells.make("lstm", 3, 4).eval()
    monkeypatch.setattr("rnnzoo.cells.torch_lstm.lstm_stack", lambda *args: pytest.fail("called outside an export"))
    layer(torch.randn(2, 5, 3))
    layer.train()(torch.randn(2, 5, 3))[0].sum().backward()
