"""The export stage's ONNX model in MLflow: -1 batch and time in its signature, served by `mlflow models serve`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import warnings
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime
import pytest

from rnnzoo.pipeline import config, files
from rnnzoo.pipeline.serve.predictor import Predictor
from rnnzoo.pipeline.serve.resolve import resolve_model
from rnnzoo.pipeline.stages.evaluate import evaluate
from rnnzoo.pipeline.stages.export import export
from rnnzoo.pipeline.stages.prepare import prepare
from rnnzoo.pipeline.stages.train import train
from tests.pipeline.test_known_noise import known_noise_samples


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_registered_models_are_served_by_mlflow_and_load_without_rnnzoo(
    workdir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    params = config.load(workdir / "params.yaml")
    prepare(params, "add-janet")
    train(params, "add-janet", progress=False)
    _torch_model_loads_where_rnnzoo_is_not_installed(tmp_path)
    evaluate(params, "add-janet")
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = export(params, "add-janet")
    assert [p.name for p in paths] == ["sequence.onnx", "step.onnx"]
    printed = "".join(capfd.readouterr()) + "\n".join(str(w.message) for w in caught)
    for noise in known_noise_samples():
        assert noise[:40] not in printed, noise

    versions = mlflow.MlflowClient().search_model_versions("name='rnnzoo-janet-adding'")
    onnx_version = max(versions, key=lambda v: int(v.version))
    # rnnzoo serve takes the same address and streams: it serves the exported graph, state inputs and all.
    served_here = Predictor(resolve_model("models:/rnnzoo-janet-adding@onnx"), 100)
    assert served_here.streams, served_here.stream_refusal
    # The README's address: the alias, whichever number the ONNX version got.
    assert mlflow.MlflowClient().get_model_version_by_alias("rnnzoo-janet-adding", "onnx").version == onnx_version.version
    info = mlflow.models.get_model_info("models:/rnnzoo-janet-adding@onnx")
    signature = info.signature
    # Served on CUDA with TF32 off where onnxruntime-gpu has a GPU, else on the CPU.
    assert info.flavors["onnx"]["providers"] == [["CUDAExecutionProvider", {"use_tf32": "0"}], "CPUExecutionProvider"]
    x_spec = signature.inputs.inputs[0]
    assert x_spec.name == "x" and x_spec.shape == (-1, -1, 2), "batch and time must be -1 in the signature"
    assert signature.inputs.input_names() == ["x"], "the state is zeroed inside the served graph, not asked for"

    port = _free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        "models:/rnnzoo-janet-adding@onnx",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    # MLflow starts `uvicorn` by name: the venv's bin must be on PATH, as with an activated venv.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow models serve did not come up"
                time.sleep(0.5)
        x = np.random.default_rng(0).random((3, 11, 2), dtype=np.float32)  # T = 11: not the export example's
        state = np.zeros((1, 3, 8), dtype=np.float32)
        answer = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": {"x": x.tolist()}})  # a bare x: a fresh start
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    expected = onnxruntime.InferenceSession(
        str(files.onnx_dir("add-janet") / "sequence.onnx"), providers=["CPUExecutionProvider"]
    ).run(None, {"x": x, "state_c": state})
    served = np.asarray(answer["predictions"]["prediction"], dtype=np.float32)
    assert np.abs(served - expected[0]).max() <= 1e-5  # served on CUDA where onnxruntime-gpu has a GPU


# Loads the registered PyTorch model with the venv's site-packages on the path but not the
# project: no cwd, no PYTHONPATH, no .pth files (-S, so rnnzoo's editable install is not seen).
LOAD_ALONE = """
import json, sys
sys.path.append(sys.argv[3])  # the venv's site-packages, as a plain folder
try:
    from rnnzoo import pipeline
    sys.exit("rnnzoo is importable here: the check proves nothing")
except ImportError:
    pass
import numpy as np
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
x = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
print(json.dumps(np.asarray(model.predict(x)).tolist()))
"""


def _torch_model_loads_where_rnnzoo_is_not_installed(tmp_path: Path) -> None:
    """The registered PyTorch model loads and predicts where rnnzoo cannot be imported."""
    uri = "models:/rnnzoo-janet-adding@pytorch"
    x = np.random.default_rng(0).random((2, 9, 2), dtype=np.float32)
    expected = np.asarray(mlflow.pyfunc.load_model(uri).predict(x))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-S", "-c", LOAD_ALONE, uri, json.dumps(x.tolist()), sysconfig.get_paths()["purelib"]],
        cwd=elsewhere,
        env={**env, "RNNZOO_NATIVE": "0"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.asarray(json.loads(result.stdout.strip().splitlines()[-1]), dtype=np.float32)
    assert served.shape == expected.shape and np.abs(served - expected).max() <= 1e-5
