"""The one module that talks to MLflow.

Each experiment row of ``params.yaml`` is one MLflow run, in one MLflow experiment per task
(``rnnzoo-<task>``). Every stage reopens that run (found by the tags ``rnnzoo.experiment`` and
``rnnzoo.params_hash``), so prepare, train and evaluate of one configuration land together;
a changed configuration gets a new run. Params are logged once, flattened. Under ``mlflow run``
the run MLflow made for the invocation (``MLFLOW_RUN_ID``) is that run.

Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project root>/mlflow.db``. The
project root is resolved to an absolute path, out of any ``dvc exp`` temporary workspace
(``.dvc/tmp/exps/...``), so runs from ``dvc exp run`` land in the same database.

A run's status and tags say how its last stage ended. Success: FINISHED, and the stage's own
``rnnzoo.failed_stage`` / ``rnnzoo.killed_stage`` tag (from an earlier attempt) is deleted. An
exception: FAILED, ``rnnzoo.failed_stage=<stage>``. Stopped from outside (Ctrl-C, or SIGTERM or
SIGHUP, as ``kill``, DVC and CI send): KILLED, ``rnnzoo.killed_stage=<stage>``; after a signal the
process exits with 128 + its number, as a shell reports a process the signal killed; how a signal
is turned into an exception safely is `pipeline.stop_signals`. SIGKILL
leaves no chance to clean up, so every stage tags the run with the process holding it
(``rnnzoo.process``: host, pid namespace, pid, start time); the next stage in that MLflow
experiment ends any RUNNING run whose holder is gone as KILLED, with ``rnnzoo.killed_stage``
naming the stage that was running. "Gone" is decided only for a holder on this machine and pid
namespace (a live holder elsewhere cannot be told from a dead one), and a reused pid is told
apart by its start time. A RUNNING run without the tag (from before it) is left as it is.

MLflow creates and migrates a new SQLite database on first use, and two processes doing it at
once can break it for good; finding or creating an experiment's run races the same way. Both
happen under an exclusive lock on ``<database>.lock`` (``fcntl.flock``), one process at a time.

The registry holds each distinct model once. ``log_model`` and ``log_onnx_model`` tag every
version with a content hash and flavour; when the latest version of that name and flavour holds
the same content, nothing is logged or registered again and the run is tagged with that version
(``rnnzoo.model_version.<flavour>``), as it is after registering a new one. Each flavour's latest
version carries the alias ``pytorch`` or ``onnx`` (``models:/<name>@onnx``), and each new version a
description naming its experiment, params hash and run.

MLflow's usage telemetry is off unless the user opts in (``RNNZOO_MLFLOW_TELEMETRY=1``, or
MLflow's own ``MLFLOW_DISABLE_TELEMETRY`` set explicitly): the pipeline runs offline. MLflow reads
the switch when it is imported, so importing this module sets it; a client that an earlier
``import mlflow`` started is dropped on first use here, and subprocesses inherit the switch.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # not on Windows: there the store is used without the lock
    fcntl = None  # type: ignore[assignment]

from rnnzoo.pipeline import files, known_noise, stop_signals
from rnnzoo.pipeline.stop_signals import StageStopped

if TYPE_CHECKING:
    from rnnzoo.pipeline.config import ExperimentConfig

DATABASE_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
_DVC_TEMP_WORKSPACE = os.sep.join(("", ".dvc", "tmp", "exps", ""))
TELEMETRY_OPT_IN = "RNNZOO_MLFLOW_TELEMETRY"
FAILED_TAG, KILLED_TAG, PROCESS_TAG = "rnnzoo.failed_stage", "rnnzoo.killed_stage", "rnnzoo.process"
CONTENT_TAG, FLAVOR_TAG = "rnnzoo.content_sha256", "rnnzoo.flavor"
DVC_EXPERIMENT_TAG = "rnnzoo.dvc_experiment"  # the DVC experiment that last ran a stage of the run
# MLflow 3 records an experiment's kind in this tag (its UI's kind selector reads it, and
# infers one from the runs otherwise): ours are model training, not GenAI.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
PARAMS_ARTIFACT = "params/experiment.yaml"


def _telemetry_off_unless_chosen() -> None:
    """Set MLflow's telemetry switch off, unless the user chose (see the module's docstring)."""
    if os.environ.get(TELEMETRY_OPT_IN, "").strip().lower() in ("1", "true", "yes", "on"):
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # an explicit value, either way, is the user's


_telemetry_off_unless_chosen()


def project_root(start: Path | None = None) -> Path:
    """The absolute project root; inside a ``dvc exp`` temp workspace, the real repository's."""
    path = (start or Path.cwd()).resolve()
    text = str(path) + os.sep
    if _DVC_TEMP_WORKSPACE in text:
        return Path(text.split(_DVC_TEMP_WORKSPACE)[0])
    return path


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / DATABASE_NAME}"


def ui_command() -> str:
    """The one command that opens the MLflow UI on these runs (the UI's telemetry off, as the pipeline's)."""
    off = os.environ.get("MLFLOW_DISABLE_TELEMETRY", "").strip().lower() in ("true", "1")
    return f"{'MLFLOW_DISABLE_TELEMETRY=true ' if off else ''}.venv/bin/mlflow ui --backend-store-uri {tracking_uri()}"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}} -> {"train.lr": 0.1}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=project_root(), check=False
        )
    except OSError:
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``sqlite:////abs`` or ``sqlite:///relative``), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?")[0]
    return Path(path).absolute() if path and path != ":memory:" else None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """One process at a time on a SQLite store: an exclusive ``flock`` on ``<database>.lock``.

    Not reentrant (a second ``open`` in the same process would wait on the first): hold it around
    short steps only. Other stores (a tracking server, files) and Windows go unlocked.
    """
    database = _sqlite_path(uri)
    if database is None or fcntl is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_READY_STORES: set[str] = set()


def _mlflow() -> Any:
    # Imported here: MLflow takes seconds to import, and `rnnzoo --help` should not wait for it.
    import mlflow
    from mlflow import telemetry
    from mlflow.telemetry.utils import is_telemetry_disabled

    if telemetry.get_telemetry_client() is not None and is_telemetry_disabled():
        telemetry.set_telemetry_client()  # mlflow was imported before this module: drop its client now
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri not in _READY_STORES and _sqlite_path(uri) is not None:
        # MLflow creates and migrates a new database on its first use in each process: under the
        # lock, so two processes never migrate at once. Both stores are cached per process after.
        with store_lock(uri):
            mlflow.search_experiments(max_results=1)
            mlflow.MlflowClient().search_registered_models(max_results=1)
        _READY_STORES.add(uri)
    return mlflow


def _process_state(pid: int) -> tuple[str, str] | None:
    """Linux's (state letter, start time in clock ticks) of ``pid``, or None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": the name may hold spaces
    return fields[0], fields[19]


def _here() -> str:
    """This machine and pid namespace: where a pid means the same process."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "-"
    return f"{socket.gethostname()} {namespace}"


def process_tag(pid: int | None = None) -> str:
    """``host pid-namespace pid start-time`` of a process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    state = _process_state(pid)
    return f"{_here()} {pid} {state[1] if state else '-'}"


def holder_gone(tag: str) -> bool:
    """Whether the process a ``rnnzoo.process`` tag names is certainly gone (a zombie is gone too)."""
    parts = tag.split()
    if len(parts) != 4 or " ".join(parts[:2]) != _here() or not parts[2].isdigit():
        return False  # another machine or namespace, or not ours: cannot tell
    pid, started = int(parts[2]), parts[3]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, another user's
    state = _process_state(pid)
    return state is not None and (state[0] in ("Z", "X") or (started != "-" and state[1] != started))


def _end_abandoned_runs(mlflow: Any, experiment_id: str) -> None:
    """End as KILLED every RUNNING run of the experiment whose holding process is gone (SIGKILL, power loss)."""
    client = mlflow.MlflowClient()
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'"):
        holder = run.data.tags.get(PROCESS_TAG)
        if holder is not None and holder_gone(holder):
            client.set_tag(run.info.run_id, KILLED_TAG, run.data.tags.get("rnnzoo.stage", "unknown"))
            client.set_terminated(run.info.run_id, "KILLED")


def _retry_locked(write: Callable[[], Any], attempts: int = 8) -> Any:
    """Run ``write``, retrying while SQLite says the database is locked (another process, a stage
    or a reader, holds it past sqlite's own wait); backs off 0.25 s doubling, about a minute in all."""
    for attempt in range(attempts):
        try:
            return write()
        except Exception as error:  # MlflowException wraps sqlite3.OperationalError
            if "database is locked" not in str(error) or attempt == attempts - 1:
                raise
            time.sleep(0.25 * 2**attempt)
    return None


def _record_outcome(mlflow: Any, run_id: str, stage: str, outcome: str | None) -> None:
    """Tag how ``stage`` ended (``outcome``: FAILED_TAG, KILLED_TAG, or None for success), dropping
    what an earlier attempt of the same stage left, so the tags describe the run as it is now."""
    _retry_locked(lambda: _set_outcome_tags(mlflow, run_id, stage, outcome))


def _set_outcome_tags(mlflow: Any, run_id: str, stage: str, outcome: str | None) -> None:
    client = mlflow.MlflowClient()
    tags = client.get_run(run_id).data.tags
    for tag in (FAILED_TAG, KILLED_TAG):
        if tag == outcome:
            client.set_tag(run_id, tag, stage)
        elif tags.get(tag) == stage:
            client.delete_tag(run_id, tag)


# Tags every stage run gets besides its own, while `tagged` holds them (rnnzoo reproduce's claim,
# scale and seed).
_EXTRA_TAGS: dict[str, str] = {}


@contextlib.contextmanager
def tagged(tags: Mapping[str, Any]) -> Iterator[None]:
    """Add ``tags`` to every stage run opened inside the block."""
    previous = dict(_EXTRA_TAGS)
    _EXTRA_TAGS.update({key: str(value) for key, value in tags.items()})
    try:
        yield
    finally:
        _EXTRA_TAGS.clear()
        _EXTRA_TAGS.update(previous)


@contextlib.contextmanager
def _invocation_run_kept() -> Iterator[str | None]:
    """Yield ``MLFLOW_RUN_ID`` (the run ``mlflow run`` made for this invocation) and keep it set for
    the next stage: MLflow's own ``start_run`` and ``end_run`` unset it, which split ``rnnzoo run``'s
    stages between the invocation's run and another."""
    invocation = os.environ.get("MLFLOW_RUN_ID")
    try:
        yield invocation
    finally:
        if invocation:
            os.environ["MLFLOW_RUN_ID"] = invocation


@contextlib.contextmanager
def stage_run(stage: str, exp: ExperimentConfig) -> Iterator[Any]:
    """Reopen (or create) the run of the experiment's configuration for ``stage``; yields the mlflow module.

    A stage that raises marks the run FAILED, so a crashed or diverged stage never looks done; one
    stopped from outside marks it KILLED (see the module's docstring).
    """
    with stop_signals.raising() as stop, _invocation_run_kept() as invocation:
        params_hash = exp.params_hash()
        mlflow = _mlflow()
        tags = {
            "rnnzoo.experiment": exp.name, "rnnzoo.params_hash": params_hash, "rnnzoo.cell": exp.cell, "rnnzoo.task": exp.task,
            "rnnzoo.stage": stage, f"rnnzoo.stage.{stage}": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "mlflow.source.git.commit": git_commit(), PROCESS_TAG: process_tag(), **_EXTRA_TAGS,
        }
        # The DVC experiment (`dvc exp run`, named with -n at queue time) whose stage this is; a
        # later stage run outside any experiment does not clear it.
        if os.environ.get("DVC_EXP_NAME"):
            tags[DVC_EXPERIMENT_TAG] = os.environ["DVC_EXP_NAME"]
        # Find-or-create, one process at a time: two stages started at once would make two runs.
        with store_lock(tracking_uri()):
            # Under `mlflow run`, MLflow made the run for this invocation: record this configuration
            # there, but never a second configuration of the same invocation (`rnnzoo run` of several).
            run_id = invocation if invocation and _holds_or_free(mlflow, invocation, exp.name, params_hash) else None
            if run_id is None:
                os.environ.pop("MLFLOW_RUN_ID", None)  # else start_run would reopen it; _invocation_run_kept restores it
                run_id = _find_run(mlflow, exp.name, exp.task, params_hash)
            # Named with the params hash: two configurations of one experiment are told apart in the UI.
            active = mlflow.start_run(run_id=run_id, run_name=None if run_id else f"{exp.name} {params_hash[:8]}", tags=tags)
        with active as run:
            # Once per run; `mlflow run` may already have logged its entry point's own parameters.
            missing = {key: str(value) for key, value in flatten(exp.params()).items() if key not in run.data.params}
            if missing:
                mlflow.log_params(missing)
                # The effective configuration (overrides applied), whole and readable, once per run.
                mlflow.log_dict(exp.params(), PARAMS_ARTIFACT)
            try:
                yield mlflow
            except (StageStopped, KeyboardInterrupt):
                stop.acknowledge()
                _record_outcome(mlflow, run.info.run_id, stage, KILLED_TAG)
                _retry_locked(lambda: mlflow.end_run(status="KILLED"))
                raise
            except BaseException:
                stop.acknowledge()  # a failing stage's cleanup is not broken off by a stop signal either
                _record_outcome(mlflow, run.info.run_id, stage, FAILED_TAG)
                _retry_locked(lambda: mlflow.end_run(status="FAILED"))
                raise
            _record_outcome(mlflow, run.info.run_id, stage, None)


def _holds_or_free(mlflow: Any, run_id: str, experiment: str, params_hash: str) -> bool:
    """Whether run ``run_id`` holds this configuration already or no configuration yet."""
    run = mlflow.MlflowClient().get_run(run_id)
    tags = run.data.tags
    fits = tags.get("rnnzoo.experiment") in (None, experiment) and tags.get("rnnzoo.params_hash") in (None, params_hash)
    if fits:  # MLflow refuses to reopen it while another experiment is active (an earlier configuration's)
        mlflow.set_experiment(experiment_id=run.info.experiment_id)
    return fits


def _find_run(mlflow: Any, experiment: str, task: str, params_hash: str) -> str | None:
    name = f"rnnzoo-{task}"
    if mlflow.get_experiment_by_name(name) is None:
        # Artifacts beside the database, at the absolute project root: not in ./mlruns of
        # whatever directory ran first (a dvc exp temp workspace is deleted afterwards).
        mlflow.create_experiment(name, artifact_location=(project_root() / ARTIFACTS_DIR).as_uri(), tags=EXPERIMENT_TAGS)
    mlflow_experiment = mlflow.set_experiment(name)
    _end_abandoned_runs(mlflow, mlflow_experiment.experiment_id)
    query = f"tags.`rnnzoo.experiment` = '{experiment}' and tags.`rnnzoo.params_hash` = '{params_hash}'"
    found = mlflow.search_runs([mlflow_experiment.experiment_id], filter_string=query, output_format="list", max_results=1)
    return found[0].info.run_id if found else None


def log_metrics(mlflow: Any, metrics: Mapping[str, float], step: int | None = None, once: bool = False) -> None:
    """Log finite metrics only: a NaN is a failure to report, never a result.

    A stage's summary metrics (no ``step``) that the run already holds with the same value are not
    logged again: a stage rerun with the same params (``dvc repro``, ``rnnzoo run``) reopens the
    same run, and its history should not grow a copy per rerun. A changed value is logged. With
    ``once``, the same holds for metrics at ``step`` (one history query per metric).
    """
    bad = {key: value for key, value in metrics.items() if not math.isfinite(value)}
    if bad:
        raise ValueError(f"refusing to log non-finite metrics {bad}")
    if step is None:
        held = mlflow.get_run(mlflow.active_run().info.run_id).data.metrics
        metrics = {key: value for key, value in metrics.items() if held.get(key) != value}
    elif once:
        metrics = {key: value for key, value in metrics.items() if logged_values(mlflow, key).get(step) != value}
    if metrics:
        mlflow.log_metrics(dict(metrics), step=step)


def log_dataset(mlflow: Any, path: Path, name: str, context: str) -> None:
    """Record the data file ``path`` as the active run's input (MLflow's Datasets): ``name``, its
    digest (sha256 of the file's bytes, 16 hex digits) and its location, under ``context`` (e.g.
    "training"). MLflow keeps one record per dataset and context, so a rerun adds none."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    digest = files.file_digest(path, "sha256")[:16]
    with known_noise.silenced():
        source = resolve_dataset_source(path.resolve().as_uri())
    # The ignore: mlflow's own typing is wrong here. Its Dataset marks `profile` abstract (without ABCMeta, so
    # subclasses still instantiate) and MetaDataset, documented as instantiable, does not define it.
    _retry_locked(
        lambda: mlflow.log_input(MetaDataset(source=source, name=name, digest=digest), context=context)  # type: ignore[abstract]
    )


def logged_values(mlflow: Any, key: str) -> dict[int, float]:
    """Metric ``key`` as the active run holds it, by step (the last value logged at each step)."""
    run_id = mlflow.active_run().info.run_id
    history = sorted(mlflow.MlflowClient().get_metric_history(run_id, key), key=lambda metric: metric.timestamp)
    return {metric.step: metric.value for metric in history}


def log_model(mlflow: Any, module: Any, example_input: Any, registered_name: str, sequence: bool) -> None:
    """Log the torch model with a signature and input example, registered as ``registered_name``
    unless that name's latest torch version holds the same content (:func:`_register_once`).

    The signature's batch axis, and for a ``sequence`` model its time axis, are -1, as in
    :func:`onnx_signature`: ``predict`` takes any batch and length.
    """
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    with torch.no_grad():
        example_output = module(example_input)

    def spec(array: Any, dynamic_axes: int) -> Any:
        return TensorSpec(array.dtype, tuple(-1 if axis < dynamic_axes else n for axis, n in enumerate(array.shape)))

    x, y = example_input.numpy(), example_output.numpy()
    # (B, T, ...) in; out (B, T, O) from a per-step head, (B, O) from a last-step or vector head.
    signature = ModelSignature(Schema([spec(x, 2 if sequence else 1)]), Schema([spec(y, 2 if sequence and y.ndim == 3 else 1)]))
    # Listed, not inferred: inference re-loads the model in a subprocess, seconds per run. What the
    # pickled module's classes import (the cells and the pipeline's model code, shipped below).
    import numpy
    import tqdm

    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}", f"tqdm=={tqdm.__version__}"]
    content = torch_content_hash(module, x, y, [*requirements, str(signature.to_dict())])

    def log() -> Any:
        with tempfile.TemporaryDirectory(prefix="rnnzoo-code-") as staging:
            return mlflow.pytorch.log_model(
                module,
                name="model",
                signature=signature,
                input_example=example_input.numpy(),
                registered_model_name=registered_name,
                # Pickled, not "pt2": torch.export unrolls the Python time loop, fixing T to the example's.
                serialization_format="pickle",
                pip_requirements=requirements,
                # The pickle names classes of rnnzoo.cells and rnnzoo.pipeline: shipped with the model, so it
                # loads where rnnzoo is not installed (mlflow models serve --env-manager virtualenv, build-docker).
                code_paths=[str(_package_copy(Path(staging)))],
            )

    _register_once(mlflow, registered_name, "pytorch", content, log)


def _package_copy(folder: Path) -> Path:
    """``folder/rnnzoo``: the package as the wheel lays it out (``rnnzoo/{cells,pipeline}``), which a
    source checkout keeps in two top-level folders. MLflow copies it into the model."""
    import rnnzoo
    from rnnzoo import cells, pipeline

    package = folder / "rnnzoo"
    package.mkdir()
    shutil.copy(Path(rnnzoo.__path__[0]) / "__init__.py", package / "__init__.py")
    for subpackage in (cells, pipeline):
        source = Path(subpackage.__path__[0])
        shutil.copytree(source, package / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    return package


def _digest(parts: list[str | bytes]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "little") + data)  # length-prefixed: no two lists hash alike
    return hasher.hexdigest()


def torch_content_hash(module: Any, example_input: Any, example_output: Any, extra: list[str]) -> str:
    """sha256 of what defines a logged torch model: class and structure, every state-dict entry, and
    its output on the example (options kept outside the state dict show there), plus ``extra``."""
    import torch

    parts: list[str | bytes] = [type(module).__qualname__, repr(module), *extra]
    parts += [example_input.tobytes(), example_output.tobytes()]
    for name, value in module.state_dict().items():
        if isinstance(value, torch.Tensor):
            raw = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # any dtype, bfloat16 too
            parts += [name, str(value.dtype), str(tuple(value.shape)), raw.numpy().tobytes()]
        else:
            parts += [name, repr(value)]
    return _digest(parts)


def onnx_content_hash(path: Path, extra: list[str]) -> str:
    """sha256 of the graph file without what records how it was made rather than what it computes,
    plus ``extra``: the file's ``git_commit``, and every doc string and inner metadata (the exporter
    tags each node with a Python stack trace, whose line numbers and ``<eval_with_key>.N`` counters
    change with the process and with any edit of the source)."""
    import onnx

    model = onnx.load(str(path))
    kept = [prop for prop in model.metadata_props if prop.key != "git_commit"]
    for field, value in model.ListFields():
        if field.name not in ("metadata_props", "doc_string"):
            _strip_provenance(value)
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.ClearField("doc_string")
    return _digest([model.SerializeToString(deterministic=True), *extra])


def _strip_provenance(value: Any) -> None:
    """Clear ``doc_string`` and ``metadata_props`` in a protobuf message (or a list of them), recursively."""
    if isinstance(value, (list, tuple)) or type(value).__name__.startswith("Repeated"):
        for item in value:
            _strip_provenance(item)
        return
    if not hasattr(value, "ListFields"):
        return
    for field, inner in value.ListFields():
        if field.name in ("doc_string", "metadata_props"):
            value.ClearField(field.name)
        elif field.type == field.TYPE_MESSAGE:
            _strip_provenance(inner)


def _register_once(mlflow: Any, registered_name: str, flavor: str, content: str, log: Callable[[], Any]) -> str:
    """Call ``log`` (which logs and registers) unless the latest ``flavor`` version of ``registered_name``
    already holds ``content``; tag the version and the run. Returns the version holding the model.

    The latest of its flavour, not any: a model changed and then changed back is registered again,
    so the latest version is always the current model.
    """
    client = mlflow.MlflowClient()
    versions = [v for v in client.search_model_versions(f"name = '{registered_name}'") if v.tags.get(FLAVOR_TAG) == flavor]
    latest = max(versions, key=lambda v: int(v.version), default=None)
    if latest is not None and latest.tags.get(CONTENT_TAG) == content:
        version = str(latest.version)
    else:
        version = str(log().registered_model_version)
        client.set_model_version_tag(registered_name, version, FLAVOR_TAG, flavor)
        client.set_model_version_tag(registered_name, version, CONTENT_TAG, content)
        run = client.get_run(mlflow.active_run().info.run_id)
        client.update_model_version(registered_name, version, description=_describe_version(registered_name, flavor, run))
    # PyTorch and ONNX versions alternate under one name: the alias is each flavour's fixed address.
    client.set_registered_model_alias(registered_name, flavor, version)
    mlflow.set_tag(f"rnnzoo.model_version.{flavor}", version)
    return version


def _describe_version(registered_name: str, flavor: str, run: Any) -> str:
    tags = run.data.tags
    what = {"pytorch": "the PyTorch model (mlflow.pytorch)", "onnx": "the ONNX sequence graph (mlflow.onnx)"}[flavor]
    return (
        f"{what} of rnnzoo experiment {tags.get('rnnzoo.experiment')} (cell {tags.get('rnnzoo.cell')}, task "
        f"{tags.get('rnnzoo.task')}, params hash {tags.get('rnnzoo.params_hash')}), logged by run {run.info.run_id}. "
        f"The latest {flavor} version is always models:/{registered_name}@{flavor}."
    )


def onnx_signature(session_inputs: Any, session_outputs: Any) -> Any:
    """A signature with every symbolic axis (batch, time) as -1.

    One inferred from an example array would fix T, and ``predict`` would refuse other lengths.
    """
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    types: dict[str, np.dtype[Any]] = {"tensor(float)": np.dtype("float32"), "tensor(int64)": np.dtype("int64")}

    def spec(arg: Any) -> Any:
        shape = tuple(dim if isinstance(dim, int) else -1 for dim in arg.shape)
        return TensorSpec(types[arg.type], shape, arg.name)

    return ModelSignature(inputs=Schema([spec(a) for a in session_inputs]), outputs=Schema([spec(a) for a in session_outputs]))


def log_onnx_model(mlflow: Any, path: Any, example: dict[str, Any], registered_name: str) -> None:
    """Log an exported graph with the ``mlflow.onnx`` flavor, registered as ``registered_name``
    unless that name's latest ONNX version holds the same graph (:func:`_register_once`). Its state
    inputs are zeroed inside the logged graph (:func:`onnx_export.with_zero_state`): MLflow serves
    fresh sequences, a bare ``x`` (and ``times``); streaming with state is ``rnnzoo serve``'s."""
    import onnx
    import onnxruntime

    from rnnzoo.pipeline import onnx_export, runtime

    # A fresh start: the state inputs zeroed inside the graph, so a bare x is a whole request.
    proto = onnx_export.with_zero_state(onnx.load(str(path)))
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=[runtime.CPU])
    signature = onnx_signature(session.get_inputs(), session.get_outputs())
    inputs = {spec.name for spec in session.get_inputs()}
    example = {name: value for name, value in example.items() if name in inputs}
    # CUDA (TF32 off) wherever the model is served with onnxruntime-gpu and a GPU, else the CPU.
    providers = runtime.provider_list(runtime.CUDA)
    requirements = [runtime.distribution(), f"onnx=={onnx.__version__}"]
    # The example is random (onnx_export.example_inputs): it is not part of what the model is.
    content = onnx_content_hash(Path(path), [*requirements, str(providers), str(signature.to_dict())])
    # Logging runs the model on the example (MLflow's check), asking for CUDA first: known noise on a CPU.
    with known_noise.silenced():
        _register_once(mlflow, registered_name, "onnx", content, lambda: mlflow.onnx.log_model(
            proto,
            name="onnx_model",
            signature=signature,
            input_example=example,
            registered_model_name=registered_name,
            save_as_external_data=False,
            onnx_execution_providers=providers,
            pip_requirements=requirements,
        ))
