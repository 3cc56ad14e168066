"""onnxruntime sessions: the provider asked for or a clear error, never a quiet fallback."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from rnnzoo.pipeline import onnx_export, runtime
from rnnzoo.pipeline.model import build_model
from rnnzoo.pipeline.tasks import make_task

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    task = make_task("adding", {"length": 4, "train_size": 4, "valid_size": 4})
    torch.manual_seed(0)
    model = build_model("janet", task.spec(task.prepare(None, 0)), 4, time_loop="scan", fused=False)
    return onnx_export.export_graph(model, "sequence", tmp_path_factory.mktemp("graph") / "sequence.onnx", {"cell": "janet"})


def test_cpu_session_runs_on_the_cpu_with_the_threads_asked_for(graph: Path) -> None:
    session = runtime.open_session(graph, runtime.CPU, threads=1)
    assert session.get_providers() == [runtime.CPU]
    assert session.get_session_options().intra_op_num_threads == 1
    prediction, state = session.run(None, {"x": np.zeros((2, 3, 2), np.float32), "state_c": np.zeros((1, 2, 4), np.float32)})
    assert prediction.shape == (2, 1) and state.shape == (1, 2, 4)


def test_resident_call_gives_the_outputs_of_a_plain_run(graph: Path) -> None:
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((3, 5, 2), dtype=np.float32), "state_c": rng.standard_normal((1, 3, 4), dtype=np.float32)}
    cpu = runtime.open_session(graph)
    expected = cpu.run(None, feeds)
    run, synchronize = runtime.resident_call(cpu, feeds)
    got = run()
    synchronize()
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    if runtime.cuda_usable():  # the outputs stay on the GPU; read back, they agree with the CPU's
        run, synchronize = runtime.resident_call(runtime.open_session(graph, runtime.CUDA), feeds)
        outputs = run()
        synchronize()
        assert [value.device_name() for value in outputs] == ["cuda"] * len(expected)
        assert all(np.abs(value.numpy() - want).max() <= 1e-5 for value, want in zip(outputs, expected, strict=True))


def test_unknown_provider_is_named_with_the_choices(graph: Path) -> None:
    with pytest.raises(ValueError, match=r"^onnxruntime provider must be one of 'CPUExecutionProvider', 'CUDAExecutionProvider', got 'TensorrtExecutionProvider'$"):
        runtime.open_session(graph, "TensorrtExecutionProvider")


def test_cuda_session_runs_on_cuda_or_says_why_it_cannot(graph: Path) -> None:
    if runtime.cuda_usable():
        assert runtime.open_session(graph, runtime.CUDA).get_providers()[0] == runtime.CUDA
        assert runtime.providers_here() == [runtime.CPU, runtime.CUDA] and runtime.best_provider() == runtime.CUDA
    else:
        with pytest.raises(RuntimeError, match=r"not usable here: it needs onnxruntime-gpu \(installed: onnxruntime"):
            runtime.open_session(graph, runtime.CUDA)
        assert runtime.providers_here() == [runtime.CPU] and runtime.best_provider() == runtime.CPU


def test_a_quiet_fallback_to_the_cpu_is_an_error(graph: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The GPU build lists CUDA, fails to load a CUDA library and runs on the CPU: what that looks like.
    class FellBack:
        def __init__(self, path: str, options: onnxruntime.SessionOptions, providers: list) -> None:
            assert providers[0] == (runtime.CUDA, {"use_tf32": "0"})  # TF32 off: float32 as torch computes it

        def get_providers(self) -> list[str]:
            return [runtime.CPU]

    monkeypatch.setattr(runtime, "cuda_usable", lambda: True)
    monkeypatch.setattr(onnxruntime, "InferenceSession", FellBack)
    with pytest.raises(RuntimeError, match=r"did not start CUDAExecutionProvider.*runs on \['CPUExecutionProvider'\]"):
        runtime.open_session(graph, runtime.CUDA)


def test_distribution_names_the_installed_build_as_a_requirement() -> None:
    name, version = runtime.distribution().split("==")
    assert name in ("onnxruntime", "onnxruntime-gpu")
    assert metadata.version(name) == version == onnxruntime.__version__


def test_a_missing_onnxruntime_says_how_to_install_one() -> None:
    code = "import sys; sys.modules['onnxruntime'] = None; import rnnzoo.pipeline.runtime"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "pip install -e '.[cpu]'" in result.stderr and "'.[gpu]'" in result.stderr


def _make_install(tmp_path: Path, driver_answers: bool, *overrides: str) -> subprocess.CompletedProcess:
    """`make -n` of the install step, with a fake `nvidia-smi` that answers or not."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\nexit {0 if driver_answers else 1}\n")
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    extra = next((o.split("=")[1] for o in overrides if o.startswith("ORT=")), "gpu" if driver_answers else "cpu")
    return subprocess.run(
        ["make", "-n", "-B", "-f", str(ROOT / "Makefile"), f"VENV={venv}", *overrides, str(venv / f".installed-{extra}")],
        cwd=ROOT, capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, check=False,
    )


@pytest.mark.parametrize(("driver_answers", "overrides", "extra"), [
    (True, (), "gpu"), (False, (), "cpu"), (True, ("ORT=cpu",), "cpu"), (False, ("ORT=gpu",), "gpu"),
])
def test_make_installs_onnxruntime_gpu_only_where_an_nvidia_driver_answers(tmp_path: Path, driver_answers: bool, overrides: tuple, extra: str) -> None:
    result = _make_install(tmp_path, driver_answers, *overrides)
    assert result.returncode == 0, result.stderr
    commands = result.stdout.splitlines()
    # Both builds go first (they share the module's files), then exactly the chosen one comes back.
    uninstall = next(i for i, line in enumerate(commands) if "pip uninstall --quiet --yes onnxruntime onnxruntime-gpu" in line)
    install = next(i for i, line in enumerate(commands) if f"pip install --quiet -e '.[pipeline,dev,docs,{extra}]'" in line)
    assert uninstall < install


def test_make_refuses_an_unknown_onnxruntime_build(tmp_path: Path) -> None:
    result = _make_install(tmp_path, True, "ORT=cuda")
    assert result.returncode != 0 and "ORT must be cpu or gpu, got 'cuda'" in result.stderr
