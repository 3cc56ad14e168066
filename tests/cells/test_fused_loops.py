"""The fused time loops (``cells.loops``) against the reference Python loop over ``recurrent_step``.

Every case runs one layer twice, ``fused=True`` and ``fused=False`` (the same parameters, the same
random masks), and compares the outputs, the final state and the gradient of every parameter and
every input (sequence, initial state, timestamps). The float64 cases hold the two paths to about
1e-12; float32 to the precision of the float32 reference. ``gradcheck`` checks each op's
backward (backpropagation through time written out) against finite differences.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from rnnzoo import cells
from rnnzoo.cells import loops
from rnnzoo.cells.loops.ops import op

FUSED = ("janet", "indrnn", "phased_lstm", "rhn", "lstm")
# Options that make each cell show its behaviour at tiny sizes: a Phased LSTM gate open often
# enough that outputs vary, an RHN with both variational dropouts on, IndRNN's tanh as well.
CASES = {
    "janet": [{}, {"shift": 0.0}],
    "indrnn": [{}, {"activation": "tanh"}, {"recurrent_max_abs": 1.5}],
    "phased_lstm": [{"ratio_on": 0.6}, {"ratio_on": 0.3, "leak": 0.05}],
    "rhn": [{"depth": 2}, {"depth": 3, "input_dropout": 0.3, "state_dropout": 0.4}],
    # Eager LSTM stacks run on torch.nn.LSTM's kernel; their fused loop serves torch.compile.
    "lstm": [{}],
    "chrono_lstm": [{"max_timescale": 10}],
}
ON_TORCH_LSTM = ("lstm", "chrono_lstm")
PARAMS = [(name, options) for name, cases in CASES.items() for options in cases]
LAYOUTS = {  # layer options: (stack, direction) combinations
    "one": {},
    "stacked_bidirectional": {"num_layers": 2, "bidirectional": True, "dropout": 0.25},
}
B, T, I, H = 4, 7, 3, 5
LENGTHS = [7, 3, 5, 1]
TOLERANCE = {torch.float64: {"atol": 1e-11, "rtol": 1e-9}, torch.float32: {"atol": 5e-5, "rtol": 1e-4}}


def _pair(name: str, options: dict, layout: dict, dtype: torch.dtype, training: bool):
    reference = cells.make(name, I, H, fused=False, **layout, **options).to(dtype).train(training)
    fused = copy.deepcopy(reference)
    fused.fused = True
    return reference, fused


def _run(layer, x, state, lengths, times, seed: int = 7):
    torch.manual_seed(seed)  # the same dropout and RHN masks on both sides
    kwargs = {"lengths": lengths}
    if times is not None:
        kwargs["times"] = times
    outputs, final = layer(x, state, **kwargs)
    # Weights the loss so every output and every state field gets a different gradient.
    loss = (outputs * torch.linspace(0.5, 1.5, outputs.shape[-1], dtype=outputs.dtype)).square().sum()
    loss = loss + sum((field * (k + 1)).sin().sum() for k, field in enumerate(final))
    return outputs, final, loss


def _inputs(name: str, dtype: torch.dtype, layer):
    x = torch.randn(B, T, I, dtype=dtype, requires_grad=True)
    shape = (layer.num_layers * layer.num_directions, B, H)
    state = layer.state_type(*(torch.randn(shape, dtype=dtype).mul(0.5).requires_grad_() for _ in layer.state_type._fields))
    times = torch.rand(B, T, dtype=dtype).mul(3.0).add(0.1).cumsum(1).requires_grad_() if name == "phased_lstm" else None
    return x, state, times


def _counting_fused(monkeypatch, name: str) -> list[int]:
    """Count the calls of the fused path, so no comparison passes by running the reference twice."""
    if name in ON_TORCH_LSTM:  # as under torch.compile: the cells' own loop, not torch.nn.LSTM's
        monkeypatch.setattr(cells.layer.RecurrentLayer, "runs_on_torch_lstm", property(lambda self: False))
    calls = [0]
    original = cells.layer._fused_direction

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(cells.layer, "_fused_direction", counted)
    return calls


def test_the_cpu_loops_are_built_here():
    # A missing compiler would make every comparison below compare the reference with itself.
    assert loops.available(torch.device("cpu")), "the C++ loops did not build: see the warning above"


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
@pytest.mark.parametrize("name, options", PARAMS, ids=[f"{n}-{i}" for n, cases in CASES.items() for i in range(len(cases))])
def test_fused_loop_matches_reference_loop(monkeypatch, name, options, layout, dtype, training):
    _assert_paths_agree(monkeypatch, name, *_pair(name, options, LAYOUTS[layout], dtype, training), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_phased_lstm_gate_with_a_ratio_on_at_or_below_zero_stays_closed_in_both_loops(monkeypatch, dtype):
    # ratio_on is learned and unclamped: a value may cross 0, where the gate never opens; at exactly 0
    # the gradients stay finite (0 · ∞ from a branch torch.where did not take once made them NaN).
    reference, fused = _pair("phased_lstm", {"ratio_on": 0.6}, {}, dtype, True)
    with torch.no_grad():
        for layer in (reference, fused):
            layer.cells[0].ratio_on.copy_(torch.tensor([-0.3, 0.0, 0.6, 0.4, -1e-3], dtype=dtype))
    _assert_paths_agree(monkeypatch, "phased_lstm", reference, fused, dtype)


def _assert_paths_agree(monkeypatch, name: str, reference, fused, dtype: torch.dtype) -> None:
    """The fused and reference layers agree: outputs, final state, every input and parameter gradient."""
    x, state, times = _inputs(name, dtype, reference)
    lengths = torch.tensor(LENGTHS)
    out_ref, final_ref, loss_ref = _run(reference, x, state, lengths, times)
    calls = _counting_fused(monkeypatch, name)
    out_fused, final_fused, loss_fused = _run(fused, x, state, lengths, times)
    assert calls[0] == len(fused.cells), "the fused loop did not run for every layer and direction"
    assert out_ref.abs().max() > 1e-3, "outputs are all zero: the comparison would prove nothing"

    tolerance = TOLERANCE[dtype]
    assert_close(out_fused, out_ref, **tolerance)
    for field, a, e in zip(final_ref._fields, final_fused, final_ref):
        assert_close(a, e, msg=lambda m, field=field: f"final state {field}: {m}", **tolerance)
    inputs = {"x": x, **{f"state.{f}": v for f, v in zip(state._fields, state)}}
    if times is not None:
        inputs["times"] = times
    names = [*inputs, *(n for n, _ in reference.named_parameters())]
    grads_ref = torch.autograd.grad(loss_ref, [*inputs.values(), *reference.parameters()], allow_unused=True)
    grads_fused = torch.autograd.grad(loss_fused, [*inputs.values(), *fused.parameters()], allow_unused=True)
    for label, a, e in zip(names, grads_fused, grads_ref):
        assert (a is None) == (e is None), f"gradient of {label}: one path has none"
        if e is not None:
            assert_close(a, e, msg=lambda m, label=label: f"gradient of {label}: {m}", **tolerance)


@pytest.mark.parametrize("name", FUSED)
def test_fused_loop_without_lengths_or_state(monkeypatch, name):
    calls = _counting_fused(monkeypatch, name)
    options = CASES[name][0]
    reference, fused = _pair(name, options, {}, torch.float64, True)
    x = torch.randn(B, T, I, dtype=torch.float64)
    out_fused, final_fused, _ = _run(fused, x, None, None, None)
    out_ref, final_ref, _ = _run(reference, x, None, None, None)
    assert calls[0] == 1
    assert_close(out_fused, out_ref, **TOLERANCE[torch.float64])
    for a, e in zip(final_fused, final_ref):
        assert_close(a, e, **TOLERANCE[torch.float64])


@pytest.mark.parametrize("name", FUSED)
def test_fused_loop_runs_under_bfloat16_autocast(monkeypatch, name):
    calls = _counting_fused(monkeypatch, name)
    reference, fused = _pair(name, CASES[name][0], {}, torch.float32, True)
    x = torch.randn(B, T, I)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_fused, final_fused, loss_fused = _run(fused, x, None, None, None)
        out_ref, final_ref, _ = _run(reference, x, None, None, None)
    loss_fused.backward()
    assert calls[0] == 1, "the fused loop did not run"
    # The dtypes the reference gives (float32 under autocast: a carried timestamp stays exact).
    assert [out_fused.dtype, *(f.dtype for f in final_fused)] == [out_ref.dtype, *(f.dtype for f in final_ref)]
    assert torch.isfinite(out_fused).all()
    assert_close(out_fused.float(), out_ref.float(), atol=5e-2, rtol=5e-2)  # bfloat16 inputs: 3 significant digits
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fused.parameters() if p.requires_grad)


def _op_arguments(name: str):
    """Small float64 arguments of each op, the differentiable ones requiring grad. The ops' CPU
    kernels exist once the build is loaded: done here, so a test calling an op passes or fails
    alone as within the whole run (``pytest -k gradcheck`` once failed, nothing having loaded it)."""
    assert loops.available(torch.device("cpu")), "the C++ loops did not build: see the warning above"
    steps, batch, hidden = 4, 3, 2
    keep = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)

    def rand(*shape):
        return (torch.randn(*shape, dtype=torch.float64) * 0.7).requires_grad_()

    if name == "janet":
        return op("janet_loop"), (rand(steps, batch, 2 * hidden), rand(batch, hidden), rand(2 * hidden, hidden), keep, 1.0)
    if name == "indrnn":
        # Pre-activations kept away from ReLU's kink so finite differences do not straddle it.
        projected = (torch.rand(steps, batch, hidden, dtype=torch.float64) + 0.2).requires_grad_()
        return op("indrnn_loop"), (projected, rand(batch, hidden).abs().detach().requires_grad_(), rand(hidden), keep, True)
    if name == "phased_lstm":
        # Timestamps and gate parameters away from the gate's corners (finite differences must not cross one).
        times = torch.tensor([[0.3, 1.1, 2.2], [0.9, 1.6, 2.9], [1.5, 2.6, 3.3], [2.2, 3.1, 4.4]], dtype=torch.float64)
        period = torch.tensor([2.0, 3.0], dtype=torch.float64).requires_grad_()
        shift = torch.tensor([0.05, 0.4], dtype=torch.float64).requires_grad_()
        ratio_on = torch.tensor([0.9, 0.7], dtype=torch.float64).requires_grad_()
        return op("phased_lstm_loop"), (
            rand(steps, batch, 4 * hidden), rand(batch, hidden), rand(batch, hidden), rand(4 * hidden, hidden),
            times.requires_grad_(), period, shift, ratio_on, keep, 0.01,
        )
    if name == "lstm":
        return op("lstm_loop"), (rand(steps, batch, 4 * hidden), rand(batch, hidden), rand(batch, hidden), rand(4 * hidden, hidden), keep)
    mask = torch.tensor([[2.0, 0.0], [2.0, 2.0], [0.0, 2.0]], dtype=torch.float64)
    return op("rhn_loop"), (
        rand(steps, batch, 2 * hidden), rand(batch, hidden), rand(3, 2 * hidden, hidden), rand(3, 2 * hidden), mask, keep,
    )


@pytest.mark.parametrize("name", FUSED)
def test_fused_op_gradients_pass_gradcheck(name):
    op, arguments = _op_arguments(name)
    differentiable = [i for i, a in enumerate(arguments) if isinstance(a, torch.Tensor) and a.requires_grad]

    def outputs_and_final(*tensors):
        full = list(arguments)
        for index, tensor in zip(differentiable, tensors):
            full[index] = tensor
        results = op(*full)
        state_fields = 2 if name in ("phased_lstm", "lstm") else 1
        return results[: 1 + state_fields]

    assert torch.autograd.gradcheck(outputs_and_final, [arguments[i] for i in differentiable], eps=1e-6, atol=1e-7)


def test_a_missing_compiler_falls_back_to_the_reference_loop_with_one_warning(tmp_path):
    # A fresh extension folder and a compiler that does not exist: the build must fail, warn once,
    # and every layer must still run (the reference loop) and give the reference's results.
    script = """
import warnings, torch
from rnnzoo import cells
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    layer = cells.make("janet", 3, 4)
    x = torch.randn(2, 5, 3)
    first, _ = layer(x)
    second, _ = layer(x)
    layer.fused = False
    reference, _ = layer(x)
messages = [str(w.message) for w in caught if "fused CPU time loops" in str(w.message)]
assert len(messages) == 1, messages
assert torch.equal(first, reference) and torch.equal(second, reference)
print("fell back:", messages[0][:60])
"""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), "CXX": str(tmp_path / "no-such-compiler")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fell back" in result.stdout
    assert not any(Path(tmp_path).rglob("*.so")), "no extension should have been built"


@pytest.mark.parametrize("name", FUSED)
def test_fused_op_passes_opcheck(name):
    # The schema, the fake implementation's shapes against the kernel's, the autograd registration,
    # and AOT dispatch: what torch.compile and export rely on.
    op_, arguments = _op_arguments(name)
    torch.library.opcheck(op_, arguments)


@pytest.mark.parametrize("name", FUSED)
def test_double_backward_is_refused_not_silently_wrong(monkeypatch, name):
    _counting_fused(monkeypatch, name)
    layer = cells.make(name, I, H, **CASES[name][0]).double()
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    outputs, _ = layer(x)
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(outputs.square().sum(), x, create_graph=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("name", FUSED)
def test_half_precision_model_gets_its_dtype_back(monkeypatch, name, dtype):
    reference, fused = _pair(name, CASES[name][0], LAYOUTS["stacked_bidirectional"], torch.float32, False)
    reference, fused = reference.to(dtype), fused.to(dtype)
    calls = _counting_fused(monkeypatch, name)
    x = torch.randn(B, T, I, dtype=dtype)
    out_fused, final_fused, _ = _run(fused, x, None, None, None)
    out_ref, _, _ = _run(reference, x, None, None, None)
    assert calls[0] == len(fused.cells)
    assert out_fused.dtype == dtype and all(field.dtype == dtype for field in final_fused)
    assert_close(out_fused.float(), out_ref.float(), atol=2e-2, rtol=2e-2)  # half inputs: 3 significant digits


@pytest.mark.parametrize("name", FUSED)
def test_fused_loop_splits_rows_over_threads_exactly(monkeypatch, name):
    # Enough rows that each step's rows are split over threads (row_grain is 2048 / H rows).
    batch, hidden = 70, 64
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        reference = cells.make(name, I, hidden, fused=False, **CASES[name][0]).double().train()
        fused = copy.deepcopy(reference)
        fused.fused = True
        _counting_fused(monkeypatch, name)
        x = torch.randn(batch, T, I, dtype=torch.float64)
        lengths = torch.randint(1, T + 1, (batch,))
        times = torch.rand(batch, T, dtype=torch.float64).mul(3).cumsum(1) if name == "phased_lstm" else None
        out_fused, _final_fused, loss_fused = _run(fused, x, None, lengths, times)
        out_ref, _final_ref, loss_ref = _run(reference, x, None, lengths, times)
        assert_close(out_fused, out_ref, **TOLERANCE[torch.float64])
        grads_fused = torch.autograd.grad(loss_fused, list(fused.parameters()))
        grads_ref = torch.autograd.grad(loss_ref, list(reference.parameters()))
        for a, e in zip(grads_fused, grads_ref):
            assert_close(a, e, **TOLERANCE[torch.float64])
    finally:
        torch.set_num_threads(threads)


def test_ops_refuse_arguments_that_would_read_out_of_bounds():
    assert loops.available(torch.device("cpu"))
    projected, h0, u = torch.randn(4, 3, 8), torch.randn(3, 8), torch.rand(8)
    with pytest.raises(RuntimeError, match="keep must be a contiguous bool tensor of shape"):
        op("indrnn_loop")(projected, h0, u, torch.ones(1, 1, dtype=torch.bool), True)
    with pytest.raises(RuntimeError, match="recurrent_weight must have shape"):
        op("indrnn_loop")(projected, h0, u[:1], None, True)
    # The Phased LSTM's gate is read through raw pointers of the loop's dtype: another dtype is refused, by name.
    steps, batch, hidden = 4, 3, 2
    gate = [torch.rand(hidden) + 1.0, torch.rand(hidden), torch.full((hidden,), 0.5)]  # period, shift, ratio_on
    args = [torch.randn(steps, batch, 4 * hidden), torch.zeros(batch, hidden), torch.zeros(batch, hidden), torch.randn(4 * hidden, hidden)]
    times = torch.arange(steps, dtype=torch.float64).unsqueeze(1).expand(steps, batch).contiguous()
    with pytest.raises(RuntimeError, match="times must be float like the loop's other inputs, got Double"):
        op("phased_lstm_loop")(*args, times, *gate, None, 0.0)
    with pytest.raises(RuntimeError, match="shift must be float like the loop's other inputs, got Double"):
        op("phased_lstm_loop")(*args, times.float(), gate[0], gate[1].double(), gate[2], None, 0.0)


def test_triton_loops_are_not_chosen_past_their_block_limit():
    assert not loops.available(torch.device("cuda"), loops.MAX_TRITON_HIDDEN + 1)


def test_a_build_lock_left_by_a_killed_build_does_not_hang_the_next(tmp_path):
    # torch waits without end while its lock file exists; a build killed part-way leaves one.
    # The next builder takes the flock (released by the kernel when its holder dies) and clears it.
    import fcntl

    from rnnzoo.cells.loops.native import _build_lock

    (tmp_path / "lock").write_text("")
    with _build_lock(tmp_path):
        assert not (tmp_path / "lock").exists()
        with open(tmp_path / "rnnzoo.lock") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a second builder waits for the first
    with open(tmp_path / "rnnzoo.lock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released after the build


def test_two_checkouts_of_the_same_sources_build_into_different_folders(tmp_path):
    # torch's build files name the sources by path: sharing a folder, two checkouts would rebuild
    # each other's build every time one of them loads it (30 s each).
    import importlib.util
    import shutil

    from rnnzoo.cells.loops import native

    here = Path(native.__file__).parent
    shutil.copytree(here / "csrc", tmp_path / "csrc")
    shutil.copy(native.__file__, tmp_path / "native.py")
    spec = importlib.util.spec_from_file_location("native_of_another_checkout", tmp_path / "native.py")
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    assert [p.read_bytes() for p in other.SOURCES] == [p.read_bytes() for p in native.SOURCES]
    assert other.build_name() != native.build_name()


def test_the_build_runs_the_pinned_ninja_whatever_ninja_is_first_on_path(tmp_path):
    # ninja 1.13 and 1.11 hash build commands differently: a process that found the system's ninja
    # first on PATH rebuilt, in 30-100 s, what one with the venv's had built, and back again.
    from rnnzoo.cells.loops import native

    assert native.load()
    library = next(Path(native.build_dir()).glob("*.so"))
    built = library.stat().st_mtime_ns
    decoy = tmp_path / "bin"
    decoy.mkdir()
    (decoy / "ninja").write_text(f"#!/bin/sh\ntouch {tmp_path / 'decoy-ran'}\nexit 1\n")
    (decoy / "ninja").chmod(0o755)
    env = {**os.environ, "PATH": f"{decoy}{os.pathsep}{os.environ['PATH']}"}
    probe = "from rnnzoo.cells.loops import native; import sys; sys.exit(0 if native.load() else 1)"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", probe], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp_path / "decoy-ran").exists(), "the build ran the first ninja on PATH"
    assert library.stat().st_mtime_ns == built, "the build was redone"


# The loops whose per-step GEMM goes through gemm.h's gemm_accumulate (BLAS on raw pointers, or
# at::addmm_ where torch's BLAS does not export sgemm_/dgemm_ or RNNZOO_BLAS=0).
ON_GEMM_ACCUMULATE = ("janet", "phased_lstm", "lstm")
_ADDMM_PROBE = """
import torch, rnnzoo.cells.layer
from rnnzoo import cells
from torch.profiler import profile
cells.layer.RecurrentLayer.runs_on_torch_lstm = property(lambda self: False)
for name in {names!r}:
    layer = cells.make(name, 3, 8)
    x = torch.randn(4, 6, 3, requires_grad=True)
    with profile() as prof:
        layer(x)[0].sum().backward()
    print(name, sum(event.count for event in prof.key_averages() if event.key == "aten::addmm_"))
"""


def _exports_blas_gemm() -> bool:
    import ctypes

    library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    return hasattr(library, "sgemm_") and hasattr(library, "dgemm_")


@pytest.mark.skipif(sys.platform != "linux", reason="reads libtorch_cpu.so's exports")
@pytest.mark.parametrize("blas", ["1", "0"], ids=["blas", "RNNZOO_BLAS=0"])
def test_the_per_step_gemm_takes_blas_pointers_or_falls_back_to_aten(blas):
    # A forward and backward of 6 steps: the ATen fallback shows as one aten::addmm_ a step and
    # direction of the loop (12); the BLAS path as none.
    assert loops.available(torch.device("cpu"))
    env = {**os.environ, "RNNZOO_BLAS": blas}
    script = _ADDMM_PROBE.format(names=ON_GEMM_ACCUMULATE)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = dict(line.split() for line in result.stdout.splitlines())
    expected = "0" if blas == "1" and _exports_blas_gemm() else "12"
    assert counts == {name: expected for name in ON_GEMM_ACCUMULATE}


def test_the_aten_fallback_of_the_per_step_gemm_matches_the_reference_loop():
    # The parity tests above, on the path a torch without sgemm_/dgemm_ takes.
    selection = " or ".join(f"{name}-" for name in ON_GEMM_ACCUMULATE)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", __file__, "-k",
               f"(matches_reference_loop or splits_rows_over_threads) and ({selection.replace('-', '')})"]
    result = subprocess.run(
        command, env={**os.environ, "RNNZOO_BLAS": "0"}, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_available_carries_the_mark_torch_compiler_assume_constant_result_sets() -> None:
    def probe() -> bool:
        return True

    marks = dict(vars(torch.compiler.assume_constant_result(probe)))
    assert marks, "torch sets a mark on the function"
    assert {name: getattr(loops.available, name, None) for name in marks} == marks


def test_importing_the_cells_does_not_import_torch_dynamo() -> None:
    # 1.8 s of every process that imports the cells (the CLI, each served worker, each torchrun rank).
    script = "import sys, rnnzoo.cells; print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("given", "device", "loop"),
    [
        (torch.float32, "cpu", torch.float32),
        (torch.float64, "cpu", torch.float64),
        (torch.bfloat16, "cpu", torch.float32),  # the C++ loops are float32 and float64
        (torch.float16, "cpu", torch.float32),
        (torch.float32, "cuda", torch.float32),
        (torch.float64, "cuda", torch.float64),
        (torch.bfloat16, "cuda", torch.bfloat16),  # the Triton loops' bfloat16 storage and products
        (torch.float16, "cuda", torch.float32),
    ],
)
def test_the_loop_dtype_for_each_projection_dtype_and_device(given, device, loop):
    assert loops.loop_dtype(given, torch.device(device)) == loop
