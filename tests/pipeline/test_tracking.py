"""How runs end (killed, failed, succeeded), the store's first use by many processes, the registry
holding each model once, and telemetry off by default."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest

from rnnzoo.pipeline import config, tracking
from rnnzoo.pipeline.stages.export import export
from rnnzoo.pipeline.stages.prepare import prepare
from rnnzoo.pipeline.stages.train import train

REPO = Path(__file__).resolve().parents[2]

# A stage that holds its run until killed; "ready" says the run exists.
HOLDING_STAGE = """
import sys, time
from pathlib import Path
from rnnzoo.pipeline import config, tracking
exp = config.load(Path("params.yaml")).experiment(sys.argv[1])
with tracking.stage_run(sys.argv[2], exp):
    Path("ready").touch()
    time.sleep(120)
"""


def _env(**extra: str) -> dict[str, str]:
    # RNNZOO_NATIVE=0: a process killed while building the fused loops would leave torch's build lock
    # in the shared ~/.cache/torch_extensions, and every later build would wait on it forever.
    return {**os.environ, "PYTHONPATH": str(REPO), "RNNZOO_NATIVE": "0", **extra}


def _wait_for(condition: Callable[[], bool], timeout: float = 120.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        # Not faster: each poll reads the SQLite store the child writes, and a busy poller made the
        # child's writes fail with "database is locked" on a loaded machine (CI, 2 cores).
        time.sleep(0.25)


def _holding(workdir: Path, experiment: str, stage: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDING_STAGE, experiment, stage], cwd=workdir, env=_env())
    _wait_for(lambda: (workdir / "ready").exists() or process.poll() is not None, what="the stage to open its run")
    assert process.poll() is None, "the holding stage died before opening its run"
    (workdir / "ready").unlink()
    return process


def _here_tracking() -> None:
    # An earlier test's stage left mlflow pointed at its own database: this test's, from the environment.
    mlflow.set_tracking_uri(tracking.tracking_uri())


def _run_of(experiment: str, params_hash: str | None = None) -> mlflow.entities.Run:
    _here_tracking()
    query = f"tags.`rnnzoo.experiment` = '{experiment}'"
    if params_hash:
        query += f" and tags.`rnnzoo.params_hash` = '{params_hash}'"
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=query, output_format="list")
    assert len(runs) == 1
    return runs[0]


def test_sigterm_during_a_stage_ends_its_run_killed_and_exits_128_plus_15(workdir: Path) -> None:
    params_hash = config.load(workdir / "params.yaml").experiment("add-janet").params_hash()
    process = _holding(workdir, "add-janet", "train")
    try:
        # Another configuration's stage in the same MLflow experiment leaves a run whose holder lives alone.
        other = config.load(workdir / "params.yaml", ["train.seed=1"]).experiment("add-janet")
        with tracking.stage_run("prepare", other):
            pass
        assert _run_of("add-janet", params_hash).info.status == "RUNNING"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        process.kill()
    run = _run_of("add-janet", params_hash)
    assert run.info.status == "KILLED"
    assert run.data.tags[tracking.KILLED_TAG] == "train" and tracking.FAILED_TAG not in run.data.tags


def test_sigterm_stops_a_training_stage_from_the_command_line(workdir: Path) -> None:
    params = config.load(workdir / "params.yaml")
    prepare(params, "add-janet")
    long = config.load(workdir / "params.yaml", ["train.steps=1000000"]).experiment("add-janet")
    command = [str(Path(sys.executable).parent / "rnnzoo"), "train", "add-janet", "--set", "train.steps=1000000"]
    log = workdir / "stderr.txt"  # a file, not a pipe: the progress bar must never block on a full pipe
    process = subprocess.Popen(command, cwd=workdir, env=_env(), stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        def training() -> bool:
            _here_tracking()
            query = "tags.`rnnzoo.stage` = 'train'"
            runs = mlflow.search_runs(search_all_experiments=True, filter_string=query, output_format="list")
            return process.poll() is not None or any(run.info.status == "RUNNING" for run in runs)

        _wait_for(training, what="training to start")
        time.sleep(0.5)  # well into the training loop
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    finally:
        process.kill()
    run = _run_of("add-janet", long.params_hash())
    assert run.info.status == "KILLED" and run.data.tags[tracking.KILLED_TAG] == "train"
    assert not (workdir / "models" / "add-janet" / "model.pt").exists()


def test_a_sigkilled_stage_is_ended_killed_by_the_next_stage_and_cleared_when_it_succeeds(workdir: Path) -> None:
    exp = config.load(workdir / "params.yaml").experiment("add-janet")
    process = _holding(workdir, "add-janet", "train")
    process.kill()
    process.wait()
    assert _run_of("add-janet", exp.params_hash()).info.status == "RUNNING", "SIGKILL leaves no chance to clean up"
    other = config.load(workdir / "params.yaml", ["train.seed=1"]).experiment("add-janet")
    with tracking.stage_run("prepare", other):
        pass  # any stage in the same MLflow experiment notices the holder is gone
    run = _run_of("add-janet", exp.params_hash())
    assert run.info.status == "KILLED" and run.data.tags[tracking.KILLED_TAG] == "train"
    with tracking.stage_run("evaluate", exp):
        pass
    assert _run_of("add-janet", exp.params_hash()).data.tags[tracking.KILLED_TAG] == "train", "only train itself clears it"
    with tracking.stage_run("train", exp):
        pass
    run = _run_of("add-janet", exp.params_hash())
    assert run.info.status == "FINISHED" and tracking.KILLED_TAG not in run.data.tags


def test_a_holder_is_gone_only_when_its_process_is(workdir: Path) -> None:
    assert not tracking.holder_gone(tracking.process_tag())
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = tracking.process_tag(process.pid)
    process.wait()
    assert tracking.holder_gone(tag)
    host, namespace, pid, started = tracking.process_tag().split()
    assert not tracking.holder_gone(f"elsewhere {namespace} {process.pid} {started}"), "another machine's pid says nothing here"
    if started != "-":
        assert tracking.holder_gone(f"{host} {namespace} {pid} {int(started) - 1}"), "a reused pid is another process"


def test_failed_then_successful_stage_leaves_no_failed_tag(workdir: Path) -> None:
    exp = config.load(workdir / "params.yaml").experiment("add-janet")
    with pytest.raises(RuntimeError), tracking.stage_run("train", exp):
        raise RuntimeError("diverged")
    run = _run_of("add-janet")
    assert run.info.status == "FAILED" and run.data.tags[tracking.FAILED_TAG] == "train"
    with tracking.stage_run("evaluate", exp):
        pass
    assert _run_of("add-janet").data.tags[tracking.FAILED_TAG] == "train", "another stage's success says nothing of train"
    with tracking.stage_run("train", exp):
        pass
    run = _run_of("add-janet")
    assert run.info.status == "FINISHED" and tracking.FAILED_TAG not in run.data.tags


def test_a_dvc_experiments_name_tags_its_run_and_a_later_stage_outside_it_keeps_the_tag(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = config.load(workdir / "params.yaml").experiment("add-janet")
    with tracking.stage_run("prepare", exp):
        pass
    assert tracking.DVC_EXPERIMENT_TAG not in _run_of("add-janet").data.tags, "no DVC experiment, no tag"
    monkeypatch.setenv("DVC_EXP_NAME", "grid-2")  # what `dvc exp run` sets for the stages it runs
    with tracking.stage_run("train", exp):
        pass
    assert _run_of("add-janet").data.tags[tracking.DVC_EXPERIMENT_TAG] == "grid-2"
    monkeypatch.delenv("DVC_EXP_NAME")
    with tracking.stage_run("evaluate", exp):
        pass
    assert _run_of("add-janet").data.tags[tracking.DVC_EXPERIMENT_TAG] == "grid-2", "a stage run by hand does not clear it"


def test_experiments_are_made_with_mlflows_model_training_kind(workdir: Path) -> None:
    exp = config.load(workdir / "params.yaml").experiment("add-janet")
    with tracking.stage_run("prepare", exp):
        pass
    experiment = mlflow.get_experiment_by_name(f"rnnzoo-{exp.task}")
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development", experiment.tags


def test_ctrl_c_ends_the_run_killed(workdir: Path) -> None:
    exp = config.load(workdir / "params.yaml").experiment("add-janet")
    with pytest.raises(KeyboardInterrupt), tracking.stage_run("train", exp):
        raise KeyboardInterrupt
    run = _run_of("add-janet")
    assert run.info.status == "KILLED" and run.data.tags[tracking.KILLED_TAG] == "train"


def test_stage_takes_stop_signals_only_for_its_duration_and_only_where_they_would_kill(workdir: Path) -> None:
    exp = config.load(workdir / "params.yaml").experiment("add-janet")
    before = signal.getsignal(signal.SIGTERM)
    with tracking.stage_run("prepare", exp):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with tracking.stage_run("prepare", exp):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(_stage_in_thread(exp)))
    worker.start()
    worker.join()
    assert outcome == ["FINISHED"], "outside the main thread a stage runs without signal handling"


def _stage_in_thread(exp: config.ExperimentConfig) -> str:
    with tracking.stage_run("evaluate", exp) as run_mlflow:
        run_id = run_mlflow.active_run().info.run_id
    return mlflow.get_run(run_id).info.status


CONCURRENT_STAGE = """
import sys, time
from pathlib import Path
from rnnzoo.pipeline import config, tracking
import mlflow  # imported before the start: the race is in the store's first use, not the imports
exp = config.load(Path("params.yaml")).experiment(sys.argv[1])
Path(f"ready-{sys.argv[2]}").touch()
while not Path("go").exists():
    time.sleep(0.001)
with tracking.stage_run("prepare", exp) as run_mlflow:
    tracking.log_metrics(run_mlflow, {"data.ok": 1.0})
"""


def test_commands_started_at_once_on_a_fresh_project_all_succeed(workdir: Path) -> None:
    (workdir / "mlflow.db").unlink()  # fresh: the first commands create and migrate the database, under the lock
    experiments = ["add-janet", "vec-unfolded", "add-janet", "vec-unfolded"]  # a configuration twice: still one run
    logs = [workdir / f"stderr-{i}.txt" for i in range(len(experiments))]
    processes = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_STAGE, name, str(i)], cwd=workdir, env=_env(), stderr=log.open("w"))
        for i, (name, log) in enumerate(zip(experiments, logs))
    ]
    try:
        def imported() -> bool:
            return all((workdir / f"ready-{i}").exists() or process.poll() is not None for i, process in enumerate(processes))

        _wait_for(imported, what="imports")
        (workdir / "go").touch()
        for process, log in zip(processes, logs):
            assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        for process in processes:
            process.kill()
    _here_tracking()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert sorted(run.data.tags["rnnzoo.experiment"] for run in runs) == ["add-janet", "vec-unfolded"]
    assert all(run.data.metrics["data.ok"] == 1.0 and run.info.status == "FINISHED" for run in runs)


def _versions(name: str) -> list:
    _here_tracking()
    return mlflow.MlflowClient().search_model_versions(f"name = '{name}'")


def test_unchanged_model_is_registered_once_and_a_changed_one_again(workdir: Path) -> None:
    name, experiment = "rnnzoo-unfolded_lstm-mnist_vector", "vec-unfolded"  # one graph to export, no fused loop to build
    params = config.load(workdir / "params.yaml")
    prepare(params, experiment)
    train(params, experiment, progress=False)
    export(params, experiment)
    assert len(_versions(name)) == 2  # the torch model at train, the ONNX graph at export
    export(params, experiment)
    train(params, experiment, progress=False)  # the same seed: the same weights
    versions = _versions(name)
    assert len(versions) == 2, "an unchanged model is not registered again"
    first = {(v.tags[tracking.FLAVOR_TAG], str(v.version)) for v in versions}
    assert {flavor for flavor, _ in first} == {"pytorch", "onnx"}
    run = _run_of(experiment)
    assert {run.data.tags["rnnzoo.model_version.pytorch"], run.data.tags["rnnzoo.model_version.onnx"]} == {v for _, v in first}

    changed = config.load(workdir / "params.yaml", ["train.seed=1"])
    train(changed, experiment, progress=False)
    export(changed, experiment)
    versions = _versions(name)
    assert len(versions) == 4 and len({v.tags[tracking.CONTENT_TAG] for v in versions}) == 4
    latest_onnx = max((v for v in versions if v.tags[tracking.FLAVOR_TAG] == "onnx"), key=lambda v: int(v.version))
    changed_run = _run_of(experiment, changed.experiment(experiment).params_hash())
    assert changed_run.data.tags["rnnzoo.model_version.onnx"] == str(latest_onnx.version)
    client = mlflow.MlflowClient()
    for flavor in ("pytorch", "onnx"):  # each flavour's fixed address is its latest version
        latest = max((v for v in versions if v.tags[tracking.FLAVOR_TAG] == flavor), key=lambda v: int(v.version))
        assert client.get_model_version_by_alias(name, flavor).version == latest.version
        description = client.get_model_version(name, latest.version).description
        assert experiment in description and changed.experiment(experiment).params_hash() in description
        assert changed_run.info.run_id in description and f"models:/{name}@{flavor}" in description


def test_onnx_content_hash_ignores_the_commit_and_stack_traces_but_not_the_graph(tmp_path: Path) -> None:
    import onnx

    x, y = (onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1]) for name in ("x", "y"))
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    hashes = []
    # Another commit and another stack trace (the exporter's per-node provenance); then another graph.
    cases = (("aaa", "<eval_with_key>.5", "Relu"), ("bbb", "<eval_with_key>.7", "Relu"), ("bbb", "<eval_with_key>.7", "Sigmoid"))
    for commit, trace, op in cases:
        graph.node[0].op_type = op
        del graph.node[0].metadata_props[:]
        graph.node[0].metadata_props.add(key="pkg.torch.onnx.stack_trace", value=trace)
        model = onnx.helper.make_model(graph)
        onnx.helper.set_model_props(model, {"git_commit": commit, "cell": "janet"})
        onnx.save(model, tmp_path / "m.onnx")
        hashes.append(tracking.onnx_content_hash(tmp_path / "m.onnx", ["onnxruntime==1"]))
    assert hashes[0] == hashes[1] != hashes[2]


TELEMETRY_PROBE = """
import json, sys
from pathlib import Path
if sys.argv[1] == "mlflow-first":
    import mlflow
from rnnzoo.pipeline import config, tracking
exp = config.load(Path("params.yaml")).experiment("add-janet")
if sys.argv[2] == "open-run":
    with tracking.stage_run("prepare", exp):
        pass
from mlflow.telemetry import get_telemetry_client
from mlflow.telemetry.utils import is_telemetry_disabled
print(json.dumps({"client": get_telemetry_client() is not None, "disabled": is_telemetry_disabled()}))
"""
# Any of these turns MLflow's telemetry off by itself (mlflow/telemetry/utils.py): the probe runs without them.
_TELEMETRY_SWITCHES = (
    "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", tracking.TELEMETRY_OPT_IN, "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI",
    "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS", "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN",
    "BUILDKITE", "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID",
    "_MLFLOW_TESTING_TELEMETRY",
)


@pytest.mark.parametrize(("setting", "order", "step", "enabled"), [
    ({}, "pipeline-first", "open-run", False),
    ({}, "mlflow-first", "open-run", False),
    ({tracking.TELEMETRY_OPT_IN: "1"}, "pipeline-first", "import-only", True),
    ({"MLFLOW_DISABLE_TELEMETRY": "false"}, "pipeline-first", "import-only", True),
])
def test_mlflow_telemetry_is_off_unless_the_user_opts_in(
    workdir: Path, setting: dict[str, str], order: str, step: str, enabled: bool
) -> None:
    # XDG_CONFIG_HOME: where an enabled client writes its installation id, kept out of the user's home.
    env = {key: value for key, value in _env(XDG_CONFIG_HOME=str(workdir)).items() if key not in _TELEMETRY_SWITCHES}
    result = subprocess.run(
        [sys.executable, "-c", TELEMETRY_PROBE, order, step], cwd=workdir, env={**env, **setting}, capture_output=True, text=True,
        timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert state == {"client": enabled, "disabled": not enabled}


def test_the_ui_command_keeps_the_ui_telemetry_off_unless_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    assert tracking.ui_command().startswith("MLFLOW_DISABLE_TELEMETRY=true .venv/bin/mlflow ui --backend-store-uri ")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    assert tracking.ui_command().startswith(".venv/bin/mlflow ui ")


def test_writes_retry_while_sqlite_says_the_database_is_locked() -> None:
    calls: list[int] = []

    def locked_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "written"

    assert tracking._retry_locked(locked_twice) == "written" and len(calls) == 3
    with pytest.raises(RuntimeError, match="database is locked"):
        tracking._retry_locked(lambda: (_ for _ in ()).throw(RuntimeError("database is locked")), attempts=2)
    other: list[int] = []

    def broken() -> None:
        other.append(1)
        raise ValueError("no such table")

    with pytest.raises(ValueError):
        tracking._retry_locked(broken)
    assert len(other) == 1, "other errors are not retried"


def test_the_effective_params_are_logged_once_per_run_with_overrides_applied(workdir: Path) -> None:
    import yaml

    exp = config.load(workdir / "params.yaml", ["experiments.add-janet.train.lr=0.003", "train.batch_size=5"]).experiment("add-janet")
    for stage in ("prepare", "train", "evaluate"):
        with tracking.stage_run(stage, exp):
            pass
    run = _run_of("add-janet", exp.params_hash())
    client = mlflow.MlflowClient()
    listed = [item.path for item in client.list_artifacts(run.info.run_id, "params")]
    assert listed == [tracking.PARAMS_ARTIFACT]
    logged = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, tracking.PARAMS_ARTIFACT, str(workdir))).read_text())
    assert logged["train"]["lr"] == 0.003 and logged["train"]["batch_size"] == 5
    assert logged == json.loads(json.dumps(exp.params(), default=str))


def test_an_invocations_run_holds_its_first_configuration_only(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `mlflow run`, the run MLflow made takes the invocation's configuration; another one
    (`rnnzoo run` of several experiments) gets its own run, not merged into it."""
    _here_tracking()
    client = mlflow.MlflowClient()
    client.search_experiments()  # the store made, its Default experiment with it
    invocation = client.create_run(experiment_id="0").info.run_id  # as `mlflow run` makes it
    monkeypatch.setenv("MLFLOW_RUN_ID", invocation)
    first = config.load(workdir / "params.yaml").experiment("add-janet")
    other = config.load(workdir / "params.yaml", ["train.seed=1"]).experiment("add-janet")
    for exp in (first, other, first):
        with tracking.stage_run("prepare", exp):
            pass
        assert os.environ["MLFLOW_RUN_ID"] == invocation
    assert mlflow.MlflowClient().get_run(invocation).data.tags["rnnzoo.params_hash"] == first.params_hash()
    assert _run_of("add-janet", other.params_hash()).info.run_id != invocation
