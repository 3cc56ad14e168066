"""``torch.compile(fullgraph=True)`` of every layer, training and eval, against the eager layer.

``fullgraph=True`` fails on any graph break, so these tests fail if a layer leaves the graph
(torch.nn.LSTM's kernel, a data-dependent branch, an untraceable helper). The fused loops are
opaque ``torch.library`` ops with fake implementations, so the compiled graph holds one node per
layer direction whatever T is: a second sequence length must not recompile.

Tracing (dynamo), the ops' fake and autograd implementations and the joint graph are the same
whatever backend runs the graph, so most cases compile with ``aot_eager`` (a second each);
inductor's code generation runs by default for two training cases (timestamps, random masks)
and for every case with ``-m slow`` (the first inductor compile alone takes 30-60 s on 2 cores).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

from rnnzoo import cells

OPTIONS = {
    "chrono_lstm": {"max_timescale": 10},
    "phased_lstm": {"ratio_on": 0.6},
    "indrnn": {"sequence_length": 6},  # a bound, so training projects u inside the graph
    "rhn": {"depth": 2, "state_dropout": 0.3},
}
SEQUENCE_CELLS = [name for name in cells.names() if cells.is_sequence_model(name)]
INDUCTOR_BY_DEFAULT = {("phased_lstm", True), ("rhn", True)}


def _cases() -> list:
    """Every cell in eval and training mode with aot_eager; with inductor by default for
    INDUCTOR_BY_DEFAULT's, with -m slow for the rest."""
    cases = []
    for name in SEQUENCE_CELLS:
        for training in (False, True):
            mode = "train" if training else "eval"
            cases.append(pytest.param(name, training, "aot_eager", id=f"{name}-{mode}-aot_eager"))
            marks = () if (name, training) in INDUCTOR_BY_DEFAULT else pytest.mark.slow
            cases.append(pytest.param(name, training, "inductor", id=f"{name}-{mode}-inductor", marks=marks))
    return cases


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    # Inductor draws random numbers its own way unless told to use eager's generator: the RHN's and
    # dropout's masks must be the same on both sides.
    with torch._inductor.config.patch(fallback_random=True):
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize(("name", "training", "backend"), _cases())
def test_compiled_layer_matches_eager_layer(name, training, backend):
    eager = cells.make(name, 3, 6, num_layers=2, bidirectional=True, **OPTIONS.get(name, {})).train(training)
    x = torch.randn(4, 5, 3)
    lengths = torch.tensor([5, 2, 4, 1])
    times = torch.rand(4, 5).mul(3).cumsum(1) if name == "phased_lstm" else None
    kwargs = {"lengths": lengths, **({"times": times} if times is not None else {})}
    _assert_compiled_matches_eager(eager, backend, x, kwargs, training)


def _assert_compiled_matches_eager(eager: torch.nn.Module, backend: str, x: torch.Tensor, kwargs: dict, training: bool) -> None:
    """Outputs and state of ``torch.compile(fullgraph=True)`` of a copy of ``eager`` against eager's
    on the same random draws, and in training every parameter's gradient."""
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True, backend=backend)
    torch.manual_seed(3)
    expected, expected_state = eager(x, **kwargs)
    torch.manual_seed(3)
    actual, actual_state = compiled(x, **kwargs)
    assert_close(actual, expected, atol=1e-5, rtol=1e-4)
    for a, e in zip(actual_state, expected_state):
        assert_close(a, e, atol=1e-5, rtol=1e-4)
    if training:
        expected.square().sum().backward()
        actual.square().sum().backward()
        for (label, p_eager), p_compiled in zip(eager.named_parameters(), compiled_module.parameters()):
            assert_close(p_compiled.grad, p_eager.grad, atol=1e-5, rtol=1e-4, msg=lambda m, label=label: f"{label}: {m}")


@pytest.mark.parametrize("name", ["janet", "lstm"])
def test_compiled_layer_does_not_recompile_for_a_new_length(name):
    layer = cells.make(name, 3, 6).eval()
    compiled = torch.compile(layer, fullgraph=True, dynamic=True, backend="aot_eager")  # dynamo decides recompiles
    counts = torch._dynamo.utils.counters
    counts.clear()
    for steps in (5, 9, 17):
        out, _ = compiled(torch.randn(2, steps, 3))
        assert out.shape == (2, steps, 6)
    frames = counts["stats"]["unique_graphs"]
    assert frames == 1, f"{frames} graphs compiled for 3 sequence lengths"


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_compiled_unfolded_lstm_matches_eager(training):
    """The one registry model with no time loop (its L steps are L layers over one vector, each with
    its own weights, so there is no recurrence to fuse: a layer is a GEMM and a pointwise pass, as
    nn.Linear is): it compiles whole too, batch norm included."""
    eager = cells.make("unfolded_lstm", 3, 6, depth=3, batch_norm=True).train(training)
    _assert_compiled_matches_eager(eager, "aot_eager", torch.randn(4, 3), {}, training)
