"""The stages in-process on tiny configs: outputs, determinism, divergence, resume, MLflow records."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch

from rnnzoo.pipeline import config, files, runtime, summary
from rnnzoo.pipeline.model_record import ModelRecord
from rnnzoo.pipeline.stages import train as train_stage
from rnnzoo.pipeline.stages.evaluate import evaluate
from rnnzoo.pipeline.stages.prepare import prepare
from rnnzoo.pipeline.stages.train import TrainingDiverged, train
from rnnzoo.pipeline.tasks.base import Batch


def _run_all(params: config.Config, name: str) -> dict[str, float]:
    prepare(params, name)
    train(params, name, progress=False)
    return evaluate(params, name)


def test_every_stage_writes_its_outputs(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml")
    for name in params.experiments:
        metrics = _run_all(params, name)
        assert files.dataset_path(name).is_file()
        assert files.model_path(name).is_file()
        assert json.loads((files.reports_dir(name) / "metrics.json").read_text()) == metrics
        assert (files.reports_dir(name) / "plots" / "learning_curve.png").stat().st_size > 1000
    plots = {p.name for p in (files.reports_dir("vec-unfolded") / "plots").glob("*.png")}
    assert plots == {"learning_curve.png", "confusion_matrix.png", "layer_gradient_norms.png", "first_layer_filters.png"}
    history = json.loads((files.reports_dir("vec-unfolded") / "train_history.json").read_text())
    assert all(len(record["layer_grad_norms"]) == 3 for record in history)  # exactly `depth` layers
    assert not list(workdir.rglob("*.tmp")), "no temporary file may be left behind"


def test_same_params_and_seed_give_the_same_metrics(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml")
    first = _run_all(params, "add-janet")
    second = _run_all(params, "add-janet")
    assert first == second
    other_seed = config.load(workdir / "params.yaml", ["train.seed=1"])
    assert _run_all(other_seed, "add-janet") != first


def _record_keep_and_forward(module: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Events in order: "keep" for each call of ``module``'s keep_freed_memory, "forward" for each module call."""
    events: list[str] = []
    monkeypatch.setattr(module, "keep_freed_memory", lambda: events.append("keep") or True)
    forward = torch.nn.Module.__call__
    monkeypatch.setattr(torch.nn.Module, "__call__", lambda *a, **k: events.append("forward") or forward(*a, **k))
    return events


# The bench stage's case is in test_bench_measures_onnxruntime_against_torch_and_records_it (it exports anyway).
@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_each_stage_that_runs_torch_keeps_freed_host_memory_before_its_model_runs(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    from rnnzoo.pipeline.stages import evaluate as evaluate_stage

    params = config.load(workdir / "params.yaml", ["train.steps=1", "train.eval_every=0"])
    prepare(params, "add-janet")
    if stage == "evaluate":
        train(params, "add-janet", progress=False)
    events = _record_keep_and_forward(train_stage if stage == "train" else evaluate_stage, monkeypatch)
    {"train": functools.partial(train, progress=False), "evaluate": evaluate}[stage](params, "add-janet")
    assert events[0] == "keep" and "forward" in events


def test_divergence_stops_with_a_message_and_no_model(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml", ["train.lr=1.0e+30", "train.grad_clip=0", "train.optimizer=sgd"])
    prepare(params, "add-janet")
    with pytest.raises(TrainingDiverged, match=r"add-janet diverged: loss is (nan|inf)"):
        train(params, "add-janet", progress=False)
    assert not files.model_path("add-janet").exists()
    runs = mlflow.search_runs(experiment_names=["rnnzoo-adding"], output_format="list")
    assert [run.info.status for run in runs] == ["FAILED"]
    assert all(not math.isnan(v) for run in runs for v in run.data.metrics.values()), "no NaN metric is logged"


def test_stage_without_its_input_names_the_stage_to_run(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml")
    with pytest.raises(FileNotFoundError, match="rnnzoo prepare add-janet"):
        train(params, "add-janet", progress=False)


class _RunsCode:
    """Unpickling this calls os.system: what a crafted checkpoint would smuggle in."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_resume_refuses_a_checkpoint_that_would_run_code(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml")
    prepare(params, "add-janet")
    marker = workdir / "code-ran"
    path = files.checkpoint_path("add-janet")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_hash": "x", "payload": _RunsCode(marker)}, path)
    with pytest.raises(ValueError, match="unsupported GLOBAL"):  # weights_only refuses it, named as a bad checkpoint
        train(params, "add-janet", resume=True, progress=False)
    assert not marker.exists(), "loading the checkpoint ran code"


@pytest.mark.slow  # 51 s; tests/pipeline/test_resume.py holds resume to the uninterrupted run in-process
def test_resume_after_a_real_kill_gives_the_uninterrupted_metrics(workdir: Path) -> None:
    overrides = ["--set", "train.steps=60", "--set", "train.checkpoint_every=5"]
    rnnzoo = [sys.executable, "-m", "rnnzoo.pipeline.cli"]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    subprocess.run([*rnnzoo, "prepare", "add-janet", *overrides], check=True, env=env, capture_output=True)
    process = subprocess.Popen([*rnnzoo, "train", "add-janet", *overrides], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not files.checkpoint_path("add-janet").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert files.checkpoint_path("add-janet").is_file() and not files.model_path("add-janet").exists()
    subprocess.run([*rnnzoo, "train", "add-janet", "--resume", *overrides], check=True, env=env, capture_output=True)
    subprocess.run([*rnnzoo, "evaluate", "add-janet", *overrides], check=True, env=env, capture_output=True)
    resumed = json.loads((files.reports_dir("add-janet") / "metrics.json").read_text())
    uninterrupted = _run_all(config.load(workdir / "params.yaml", [o for o in overrides if o != "--set"]), "add-janet")
    assert resumed == uninterrupted


def test_resume_refuses_a_checkpoint_of_other_params(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml")
    prepare(params, "add-janet")
    train(params, "add-janet", stop_after=4, progress=False)
    changed = config.load(workdir / "params.yaml", ["train.lr=0.02"])
    with pytest.raises(ValueError, match="other params"):
        train(changed, "add-janet", resume=True, progress=False)


def test_mlflow_holds_one_run_per_experiment_with_params_metrics_artifacts_and_model(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml")
    _run_all(params, "add-janet")
    runs = mlflow.search_runs(experiment_names=["rnnzoo-adding"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["rnnzoo.cell"] == "janet" and run.data.tags["rnnzoo.task"] == "adding"
    assert {f"rnnzoo.stage.{stage}" for stage in ("prepare", "train", "evaluate")} <= set(run.data.tags)
    assert run.data.params["train.lr"] == "0.01" and run.data.params["hidden_size"] == "8"
    assert run.data.metrics["valid.loss"] == json.loads((files.reports_dir("add-janet") / "metrics.json").read_text())["valid.loss"]
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train.loss")
    assert [m.step for m in history] == list(range(2, 13, 2))
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert "plots/learning_curve.png" in artifacts
    versions = mlflow.MlflowClient().search_model_versions("name='rnnzoo-janet-adding'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    model = mlflow.pyfunc.load_model(f"models:/rnnzoo-janet-adding/{versions[0].version}")
    splits = torch.load(files.dataset_path("add-janet"), weights_only=True)
    prediction = model.predict(splits["valid"]["x"][:3].numpy())
    assert prediction.shape == (3, 1)
    longer = torch.rand(2, 9, 2).numpy()  # trained and logged at T = 6: the signature's time axis is -1
    assert model.predict(longer).shape == (2, 1)


def test_mlflow_pytorch_model_of_phased_lstm_reads_timestamps_as_the_last_feature(workdir: Path) -> None:
    from tests.pipeline.conftest import tiny_params, write_params

    params = tiny_params()
    params["experiments"] = {"freq": {
        "cell": "phased_lstm", "task": "frequency", "hidden_size": 8, "cell_options": {},
        "task_options": {"sampling": "async", "train_size": 32, "valid_size": 8}, "model_options": {}, "train": {"steps": 4},
    }}
    loaded = config.load(write_params(workdir / "phased.yaml", params))
    prepare(loaded, "freq")
    train(loaded, "freq", progress=False)
    versions = mlflow.MlflowClient().search_model_versions("name='rnnzoo-phased_lstm-frequency'")
    model = mlflow.pyfunc.load_model(f"models:/rnnzoo-phased_lstm-frequency/{versions[0].version}")
    valid = torch.load(files.dataset_path("freq"), weights_only=True)["valid"]
    x, times = valid["x"][:3], valid["times"][:3]
    packed = torch.cat([x, times.unsqueeze(-1)], dim=-1).numpy()
    reference = ModelRecord.from_dict(files.load_torch(files.model_path("freq"), "model", "train")).build()
    with torch.no_grad():
        expected = reference(Batch(x, x, times=times))[0].numpy()
    assert np.abs(model.predict(packed) - expected).max() <= 1e-5
    shifted = packed.copy()
    shifted[..., -1] *= 0.37  # other timestamps, same features: another phase of every gate
    assert np.abs(model.predict(shifted) - expected).max() > 1e-4


def test_language_model_resume_restores_the_carried_state(workdir: Path) -> None:
    from tests.pipeline.conftest import tiny_params, write_params

    params = tiny_params()
    params["experiments"] = {
        "lm": {
            "cell": "lstm", "task": "ptb", "hidden_size": 8, "cell_options": {}, "task_options": {"bptt": 5, "sentences": 200},
            "model_options": {"tie_weights": True}, "train": {"steps": 10},
        }
    }
    loaded = config.load(write_params(workdir / "params.yaml", params))
    metrics = _run_all(loaded, "lm")
    assert metrics["valid.perplexity"] > 1.0
    files.model_path("lm").unlink()
    train(loaded, "lm", stop_after=3, progress=False)
    held = torch.load(files.checkpoint_path("lm"), weights_only=True)
    assert held["carries_state"] and len(held["ranks"]) == 1 and len(held["ranks"][0]["carried"]) == 2  # an LSTM's (h, c)
    train(loaded, "lm", resume=True, progress=False)
    assert evaluate(loaded, "lm") == metrics


def test_mixed_precision_trains_to_finite_metrics_that_differ_from_float32(workdir: Path) -> None:
    full = _run_all(config.load(workdir / "params.yaml"), "add-janet")
    mixed = _run_all(config.load(workdir / "params.yaml", ["train.amp=true"]), "add-janet")
    assert all(math.isfinite(value) for value in mixed.values())
    assert mixed["valid.loss"] != full["valid.loss"]


def test_bench_measures_onnxruntime_against_torch_and_records_it(workdir: Path) -> None:
    from rnnzoo.pipeline.stages import bench as bench_stage
    from rnnzoo.pipeline.stages.bench import bench
    from rnnzoo.pipeline.stages.export import export

    params = config.load(workdir / "params.yaml")
    metrics_of = {}
    for name in params.experiments:
        _run_all(params, name)
        export(params, name)
        with pytest.MonkeyPatch.context() as patch:
            events = _record_keep_and_forward(bench_stage, patch)
            metrics = metrics_of[name] = bench(params, name)
        assert events[0] == "keep" and "forward" in events, "torch timed as `rnnzoo train` runs it, freed memory kept"
        report = json.loads((files.reports_dir(name) / "bench.json").read_text())
        assert {k: v for k, v in report.items() if k != "detail"} == metrics
        detail = report["detail"]
        assert detail["threads"] == 1 and detail["batch_sizes"] == [1, 4] and detail["tf32"] is False
        assert detail["freed_memory_kept"] is True  # what the (patched) keep_freed_memory returned
        assert torch.backends.cudnn.allow_tf32, "the bench restores torch's TF32 setting for later stages"
        assert list(detail["providers"]) == runtime.providers_here()  # CUDA too where onnxruntime-gpu has a GPU
        assert detail["onnxruntime"] == runtime.distribution()
        for measured in detail["providers"].values():
            assert len(measured["rows"]) == len(detail["lengths"]) * 2
            for row in measured["rows"]:
                assert row["onnxruntime_p99_ms"] >= row["onnxruntime_p50_ms"] > 0 and row["torch_p50_ms"] > 0
                assert row["speedup_low"] <= row["speedup_vs_torch"] <= row["speedup_high"]  # the paired ratios' median
        assert (files.reports_dir(name) / "bench_plots" / "latency_vs_batch.png").stat().st_size > 1000
        table = (files.reports_dir(name) / "bench.md").read_text()
        for provider, measured in detail["providers"].items():
            assert f"{provider} against torch on {measured['torch_device']}, measured on {measured['hardware']}:" in table
        assert table.count("\n| ") == len(detail["providers"]) * (2 + len(detail["lengths"]) * 2)  # header, rule, rows
        run = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.`rnnzoo.experiment` = '{name}'", output_format="list")[0]
        assert run.data.metrics["bench.cpu.batch1_p50_ms"] == metrics["bench.cpu.batch1_p50_ms"]
    lengths = json.loads((files.reports_dir("add-janet") / "bench.json").read_text())["detail"]["lengths"]
    assert lengths == [1, 6, 12]  # a quarter, the task's T = 6, and twice it
    overview = summary.bench_markdown(["add-janet", "vec-unfolded", "never-benched"]).splitlines()
    rows = [line.split(" | ") for line in overview if line.startswith(("| add-janet", "| vec-unfolded"))]
    assert len(rows) == 2 * len(runtime.providers_here())
    janet_cpu = next(row for row in rows if row[0] == "| add-janet" and row[2] == "CPU")
    assert janet_cpu[1] == "6" and float(janet_cpu[4]) == pytest.approx(metrics_of["add-janet"]["bench.cpu.batch1_p50_ms"], abs=1e-3)
    assert summary.bench_markdown(["never-benched"]) is None


def test_indrnn_bound_holds_in_the_saved_model(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml", [
        "experiments.add-janet.cell=indrnn", "experiments.add-janet.cell_options={recurrent_max_abs: 0.5}", "train.lr=0.5",
    ])
    prepare(params, "add-janet")
    train(params, "add-janet", progress=False)
    weights = torch.load(files.model_path("add-janet"), weights_only=True)["state_dict"]
    assert weights["layer.cells.0.recurrent_weight"].abs().max() <= 0.5


def test_stages_after_train_refuse_a_model_trained_with_other_params(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml")
    _run_all(params, "add-janet")
    changed = config.load(workdir / "params.yaml", ["experiments.add-janet.train.lr=0.5"])
    with pytest.raises(ValueError, match="trained with other params.*rnnzoo train add-janet"):
        evaluate(changed, "add-janet")


def test_export_that_fails_part_way_keeps_the_previous_graphs(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnzoo.pipeline.stages import export as export_stage

    params = config.load(workdir / "params.yaml")
    _run_all(params, "add-janet")
    export_stage.export(params, "add-janet")
    before = {p.name: p.read_bytes() for p in files.onnx_dir("add-janet").iterdir()}
    assert set(before) == {"sequence.onnx", "step.onnx"}
    real = export_stage.onnx_export.export_graph

    def crash_on_step(model: torch.nn.Module, graph: str, path: Path, metadata: dict) -> Path:
        if graph == "step":
            raise RuntimeError("exporter crashed")
        return real(model, graph, path, metadata)

    monkeypatch.setattr(export_stage.onnx_export, "export_graph", crash_on_step)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_stage.export(params, "add-janet")
    assert {p.name: p.read_bytes() for p in files.onnx_dir("add-janet").iterdir()} == before
    assert not [p.name for p in files.onnx_dir("add-janet").parent.iterdir() if p.name.startswith(".")], "no temporary folder is left"


def test_a_timestamped_cell_trains_and_logs_its_model_on_a_task_without_timestamps(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml", ["experiments.add-janet.cell=phased_lstm", "experiments.add-janet.cell_options={}"])
    prepare(params, "add-janet")
    train(params, "add-janet", progress=False)
    runs = mlflow.search_runs(experiment_names=["rnnzoo-adding"], output_format="list")
    assert [run.info.status for run in runs] == ["FINISHED"]
    assert mlflow.MlflowClient().search_model_versions("name='rnnzoo-phased_lstm-adding'")


def test_the_run_records_its_dataset_once_and_its_last_stage(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml")
    _run_all(params, "add-janet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(params, "add-janet", progress=False)  # a rerun of the same params: no second record
    assert not [w for w in caught if "dataset source" in str(w.message)], "MLflow's ambiguity warning is known noise"
    (run,) = mlflow.search_runs(experiment_names=["rnnzoo-adding"], output_format="list")
    (dataset_input,) = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    path = files.dataset_path("add-janet")
    assert dataset.name == "add-janet (adding)" and dataset.digest == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert json.loads(dataset.source) == {"uri": path.resolve().as_uri()} and dataset.source_type == "local"
    assert [tag.value for tag in dataset_input.tags] == ["training"]
    assert run.data.tags["rnnzoo.stage"] == "train" and run.info.status == "FINISHED", "the tag names the last stage that ran"


@pytest.mark.parametrize("requested", [True, False], ids=["requested", "default"])
def test_system_metrics_are_logged_on_request_only(workdir: Path, monkeypatch: pytest.MonkeyPatch, requested: bool) -> None:
    # MLflow's own switch: export MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true (README, MLflow section).
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", str(requested).lower())
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    params = config.load(workdir / "params.yaml", ["train.steps=60"])
    prepare(params, "add-janet")
    train(params, "add-janet", progress=False)
    (run,) = mlflow.search_runs(experiment_names=["rnnzoo-adding"], output_format="list")
    system = [key for key in run.data.metrics if key.startswith("system/")]
    assert bool(system) == requested, system
