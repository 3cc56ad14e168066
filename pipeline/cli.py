"""The ``rnnzoo`` command line.

torch, the cells and the pipeline's modules are imported inside the commands that use them, so
``rnnzoo --help``, ``--version`` and a refused option answer without the seconds torch takes to
import.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import rnnzoo

if TYPE_CHECKING:
    from rnnzoo.pipeline import config as config_module

app = typer.Typer(help="rnnzoo: recurrent cells that papers proposed as better LSTMs.", no_args_is_help=True)
# Wide enough for the report table when output is piped (rich falls back to 80 columns).
console = Console(width=max(Console().width, 120))


def _summary(cls: type) -> str:
    """The first paragraph of the docstring of the module defining ``cls``."""
    module_doc = __import__(cls.__module__, fromlist=["__doc__"]).__doc__ or ""
    return " ".join(module_doc.strip().split("\n\n")[0].split())


def _version(value: bool) -> None:
    if value:
        console.print(f"rnnzoo {rnnzoo.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the installed version and exit."),
) -> None:
    """rnnzoo: recurrent cells that papers proposed as better LSTMs."""


def _device(device: str) -> str:
    """auto -> cuda where present, else cpu; refuse what is not there."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"device must be one of 'auto', 'cpu', 'cuda', got {device!r}", param_hint="--device")
    if device == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("device 'cuda' asked for, but torch sees no CUDA GPU", param_hint="--device")
    return device


@app.command("cells")
def list_cells(
    input_size: int = typer.Option(32, min=1, help="Input features per step."),
    hidden_size: int = typer.Option(128, min=1, help="Units per layer (the width)."),
) -> None:
    """List the registered cells with their parameter counts at a given width (their speed: `rnnzoo bench cells`)."""
    from rnnzoo import cells
    from rnnzoo.pipeline import cell_bench

    table = Table(title=f"rnnzoo cells at input_size={input_size}, hidden_size={hidden_size}")
    table.add_column("cell")
    table.add_column("parameters", justify="right")
    table.add_column("paper")
    for name in cells.names():
        model = cells.make(name, input_size, hidden_size, **cell_bench.required_options(name, 100))
        documented = model.cell_type if isinstance(model, cells.RecurrentLayer) else type(model)  # the cell's paper, not the layer's
        table.add_row(name, f"{sum(p.numel() for p in model.parameters()):,}", _summary(documented))
    console.print(table)


ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file (one section a stage, plus experiments).")
SetOption = typer.Option(None, "--set", "-s", help="Override a param, e.g. --set experiments.adding-janet.train.lr=0.01 (an experiment's own train map wins over the train section; repeatable; values are YAML).")


def _fail(error: Exception, code: int) -> typer.Exit:
    """Print ``error: <message>`` on one line and return the exit to raise.

    Escaped: a message quoting ``[batch, time]`` or a value such as ``[bold]`` is not rich markup;
    soft_wrap: a long message stays one line, however wide the terminal.
    """
    console.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
    return typer.Exit(code)


def _load(params: Path, overrides: list[str] | None) -> config_module.Config:
    from rnnzoo.pipeline import config as config_module

    try:
        return config_module.load(params, overrides)
    except ValueError as error:  # ConfigError: a bad params file or --set
        raise _fail(error, 2) from None


def _names(config: config_module.Config, experiments: list[str] | None) -> list[str]:
    names = experiments or list(config.experiments)
    for name in names:
        try:
            config.experiment(name)
        except ValueError as error:
            raise _fail(error, 2) from None
    return names


def _run_stage(stage: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a stage; expected failures print one clear line and exit 1, not a traceback."""
    from rnnzoo.pipeline.distributed import PEERS_LOST_EXIT, PeersLost
    from rnnzoo.pipeline.outputs import StageOutputError
    from rnnzoo.pipeline.stages.train import TrainingDiverged

    try:
        return stage(*args, **kwargs)
    except PeersLost as error:  # a rank of a torchrun job whose peer failed first
        raise _fail(error, PEERS_LOST_EXIT) from None
    # ValueError: bad params or stage outputs (files.load_torch); StageOutputError: an output could not be written.
    except (ValueError, FileNotFoundError, TrainingDiverged, StageOutputError) as error:
        raise _fail(error, 1) from None


@app.command()
def prepare(experiments: list[str] = typer.Argument(None, help="Experiments to prepare (default: all)."), params: Path = ParamsOption, set_: list[str] = SetOption) -> None:
    """Make or load each experiment's data into data/<experiment>/."""
    from rnnzoo.pipeline.stages.prepare import prepare as run

    config = _load(params, set_)
    for name in _names(config, experiments):
        console.print(f"prepared {_run_stage(run, config, name)}")


@app.command()
def train(
    experiments: list[str] = typer.Argument(None, help="Experiments to train (default: all)."),
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    resume: bool = typer.Option(False, "--resume", help="Continue from models/<experiment>/checkpoint/last.pt."),
    stop_after: int = typer.Option(None, "--stop-after", min=1, hidden=True, help="Stop after this step, keeping a checkpoint."),
    nproc_per_node: int = typer.Option(
        None, "--nproc-per-node", min=1,
        help="Data-parallel training on N processes of this node, under torchrun (DistributedDataParallel: nccl on CUDA, "
        "gloo on the CPU); train.batch_size stays the global batch, split over the ranks.",
    ),
    nnodes: int = typer.Option(1, "--nnodes", min=1, help="With --nproc-per-node: the job's nodes (torchrun's --nnodes); needs --rdzv-endpoint."),
    node_rank: int = typer.Option(None, "--node-rank", min=0, help="With --nproc-per-node: this node's rank among --nnodes (torchrun's --node-rank)."),
    rdzv_endpoint: str = typer.Option(None, "--rdzv-endpoint", help="With --nproc-per-node: HOST:PORT of node 0, which every node reaches (torchrun's)."),
) -> None:
    """Train each experiment's model into models/<experiment>/ (GPU when there is one)."""
    from rnnzoo.pipeline import distributed

    config = _load(params, set_)
    names = _names(config, experiments)
    if nproc_per_node is not None:
        worker_args = [*names, "--params", str(params), *(arg for override in set_ or [] for arg in ("--set", override))]
        worker_args += ["--resume"] * resume + (["--stop-after", str(stop_after)] if stop_after else [])
        try:
            args = distributed.torchrun_args(nproc_per_node, nnodes, node_rank, rdzv_endpoint, worker_args)
        except ValueError as error:
            raise _fail(error, 2) from None
        from rnnzoo.pipeline import files
        from rnnzoo.pipeline.stages.train import resolve_device

        for name in names:  # said once here, rather than by every rank
            try:
                if resolve_device(config.experiment(name).train.device).type == "cuda":
                    distributed.require_gpus(nproc_per_node)
            except ValueError as error:
                raise _fail(error, 2) from None
            try:
                files.require_file(files.dataset_path(name), "dataset", f"rnnzoo prepare {name}")
            except FileNotFoundError as error:
                raise _fail(error, 1) from None
        try:
            distributed.launch(args)
        except distributed.RankFailed as error:
            raise _fail(error, 1) from None
        return
    if nnodes != 1 or node_rank is not None or rdzv_endpoint:
        raise _fail(ValueError("--nnodes, --node-rank and --rdzv-endpoint go with --nproc-per-node (torchrun's processes per node)"), 2)
    from rnnzoo.pipeline.stages.train import train as run

    for name in names:
        trained = _run_stage(run, config, name, resume=resume, stop_after=stop_after)
        if distributed.is_main_process():  # under torchrun, rank 0 speaks for the job
            console.print(f"trained {trained}")
    distributed.leave(distributed.World.from_env())  # a rank's process group, joined by the first experiment


@app.command()
def evaluate(experiments: list[str] = typer.Argument(None, help="Experiments to evaluate (default: all)."), params: Path = ParamsOption, set_: list[str] = SetOption) -> None:
    """Write metrics and plots of each trained model to reports/<experiment>/."""
    from rnnzoo.pipeline.stages.evaluate import evaluate as run

    config = _load(params, set_)
    for name in _names(config, experiments):
        metrics = _run_stage(run, config, name)
        console.print(f"{name}: valid loss {metrics['valid.loss']:.4g} (baseline {metrics['baseline_loss']:.4g})")


@app.command("export")
def export_command(
    experiments: list[str] = typer.Argument(None, help="Experiments to export (default: all)."),
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    triton: Path = typer.Option(
        None, "--triton", file_okay=False,
        help="Also write the graphs as an NVIDIA Triton Inference Server model repository here: <exp>-step under the "
        "sequence batcher with implicit state, <exp>-sequence (or -vector) under the dynamic batcher.",
    ),
) -> None:
    """Export each trained model to ONNX (sequence and step graphs) under models/<experiment>/onnx/."""
    from rnnzoo.pipeline import triton_repository
    from rnnzoo.pipeline.stages.export import export as run

    config = _load(params, set_)
    for name in _names(config, experiments):
        paths = _run_stage(run, config, name)
        for path in paths:
            console.print(f"exported {path}")
        if triton is not None:
            written = _run_stage(triton_repository.write, name, {path.stem: path for path in paths}, triton)
            for path in written:
                console.print(f"triton model {path}")
            if not written:
                console.print(f"triton models of {name} in {triton}: unchanged")


class BenchShape(str, enum.Enum):
    default = "default"
    flashrnn = "flashrnn"


@app.command("bench")
def bench_command(
    targets: list[str] = typer.Argument(None, help="Experiments to benchmark (default: all), or `cells` for the cell tables."),
    params: Path = ParamsOption,
    set_: list[str] = SetOption,
    device: str = typer.Option("all", help="`bench cells`: cpu, cuda, or all (cpu, and cuda where present)."),
    shape: BenchShape = typer.Option(BenchShape.default, help="`bench cells`: flashrnn adds FlashRNN's B=16 T=1024 H=768 bf16."),
    rounds: int = typer.Option(10, min=2, help="`bench cells`: paired rounds per cell."),
    block: int = typer.Option(3, min=1, help="`bench cells`: back-to-back calls per side and round."),
    flatness: bool = typer.Option(True, help="`bench cells`: also time T=400 against T=50."),
    hidden_size: int = typer.Option(None, min=1, help="`bench cells`: time this one shape instead of the device's (width H)..."),
    batch_size: int = typer.Option(None, min=1, help="...batch B..."),
    steps: int = typer.Option(None, min=3, help="...steps T..."),
    input_size: int = typer.Option(None, min=1, help="...and input features I (defaults H=128 B=32 T=100 I=32 for the ones not given)."),
) -> None:
    """onnxruntime vs torch eager for each experiment; `rnnzoo bench cells`: every cell vs torch.nn.LSTM."""
    if targets == ["cells"]:
        import torch

        from rnnzoo.pipeline import cell_bench, files

        devices = (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]) if device == "all" else [_device(device)]
        chosen = (hidden_size, batch_size, steps, input_size)
        one = None if chosen == (None,) * 4 else cell_bench.Shape(hidden_size or 128, batch_size or 32, steps or 100, input_size or 32)
        for name in devices:
            shapes = [one] if one else list(cell_bench.SHAPES[name])
            shapes += [cell_bench.FLASHRNN] if shape is BenchShape.flashrnn else []
            rows = []
            for each in shapes:
                with console.status(f"{name}: timing every cell at {each.label()}..."):
                    # FlashRNN's comparison is JANET and the LSTMs at its shape, not every cell.
                    names = ["lstm", "janet"] if each == cell_bench.FLASHRNN else None
                    rows += cell_bench.measure(name, each, names, rounds=rounds, block=block)
            flat_rows = []
            if flatness:
                with console.status(f"{name}: timing T={cell_bench.FLATNESS_STEPS[1]} against T={cell_bench.FLATNESS_STEPS[0]}..."):
                    flat_rows = cell_bench.flatness(name, shapes[0])
            table = cell_bench.markdown(name, rows, flat_rows, rounds, block, memory_kept=cell_bench.keep_freed_memory())
            path = files.write_text(table, files.REPORTS_DIR / f"bench_cells_{name}.md")
            console.print(table, markup=False)
            console.print(f"saved {path}")
        return
    from rnnzoo.pipeline.stages.bench import bench as run

    config = _load(params, set_)
    for name in _names(config, targets):
        metrics = _run_stage(run, config, name)
        console.print(f"{name}: " + ", ".join(f"{key.removeprefix('bench.')} {value:.3g}" for key, value in metrics.items()))


class Provider(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@app.command()
def serve(
    model: str = typer.Argument(..., help="An ONNX file, an exported experiment's name, or a registered model URI (models:/NAME/VERSION)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8000, min=1, max=65535),
    api_key: str = typer.Option(None, envvar="RNNZOO_API_KEY", help="If set, every request needs the header X-API-Key."),
    max_sessions: int = typer.Option(1000, min=1, help="Streaming sessions kept at once (429 past it)."),
    session_ttl: float = typer.Option(600.0, min=1.0, help="Seconds an idle session lives."),
    max_length: int = typer.Option(10_000, min=1, help="Most steps in one sequence or one /steps call."),
    max_batch: int = typer.Option(256, min=1, help="Most sequences in one /predict call."),
    max_body_bytes: int = typer.Option(2_000_000, min=1, help="Largest request body, counted as it arrives (413 past it)."),
    body_timeout: float = typer.Option(10.0, min=0.1, help="Seconds a request body may take to arrive (408 past it)."),
    idle_timeout: float = typer.Option(5.0, min=0.1, help="Seconds a connection may wait for a request's headers, or idle between requests."),
    limit_concurrency: int = typer.Option(256, min=1, help="Most connections and running requests at once (503 past it)."),
    provider: Provider = typer.Option(Provider.auto, help="onnxruntime provider: auto is CUDA where onnxruntime-gpu has a GPU, else the CPU."),
    workers: int = typer.Option(1, help="Processes behind the one port (up to 4 per CPU); with more than 1, they share the sessions in a SQLite file."),
) -> None:
    """Serve an exported model with onnxruntime: /predict, streaming /sessions, /health, /metadata, /docs."""
    import os

    import uvicorn

    from rnnzoo.pipeline import runtime
    from rnnzoo.pipeline.serve.app import create_app
    from rnnzoo.pipeline.serve.connections import uvicorn_options
    from rnnzoo.pipeline.serve.predictor import Predictor
    from rnnzoo.pipeline.serve.resolve import resolve_model
    from rnnzoo.pipeline.serve.workers import WORKER_APP, WorkerSettings, check_workers, shared_sessions

    try:
        check_workers(workers)
    except ValueError as error:
        raise _fail(error, 2) from None
    if api_key is None and os.environ.get("RNNZOO_API_KEY") == "":
        api_key = ""  # click reads an empty variable as unset: that would serve without the key the user meant to set
    chosen = {Provider.auto: None, Provider.cpu: runtime.CPU, Provider.cuda: runtime.CUDA}[provider]
    try:
        path = resolve_model(model)
        predictor = Predictor(path, max_length, provider=chosen)
    except (ValueError, FileNotFoundError, RuntimeError) as error:  # no such model, not a model, CUDA not usable here
        raise _fail(error, 1) from None
    try:
        application = create_app(predictor, api_key, max_sessions, session_ttl, max_batch, max_body_bytes, body_timeout)
    except ValueError as error:  # a setting that cannot work, e.g. an empty --api-key
        raise _fail(error, 2) from None
    processes = f" in {workers} worker processes" if workers > 1 else ""
    console.print(f"serving {escape(str(path))} with {predictor.provider}{processes} on http://{host}:{port} (docs at /docs)")
    if not predictor.streams:
        console.print(f"no streaming sessions: {escape(predictor.stream_refusal or '')}")
    options = {"host": host, "port": port, **uvicorn_options(idle_timeout, limit_concurrency)}
    if workers == 1:
        uvicorn.run(application, **options)
        return
    # Each worker builds the app that was just checked here, from these settings (see serve/workers.py).
    settings = WorkerSettings(str(path.resolve()), predictor.provider, max_length, api_key, max_sessions, session_ttl, max_batch,
                              max_body_bytes, body_timeout)
    with shared_sessions(settings):
        uvicorn.run(WORKER_APP, factory=True, workers=workers, **options)


@app.command("load-test")
def load_test(
    url: str = typer.Argument("http://127.0.0.1:8000", help="The server's base URL."),
    clients: int = typer.Option(32, min=1), seconds: float = typer.Option(20.0, min=0.5),
    api_key: str = typer.Option(None, envvar="RNNZOO_API_KEY"),
    out: Path = typer.Option(None, help="Where to write the results (default: reports/serve_load.json)."),
) -> None:
    """A bounded load test of /predict on a running server: requests/s, p50/p99 latency, errors."""
    from rnnzoo.pipeline import files
    from rnnzoo.pipeline.serve.load import run_load

    try:
        result = run_load(url.rstrip("/"), clients, seconds, api_key)
    except (OSError, ValueError) as error:  # no server there, a refused /metadata, a key HTTP cannot carry
        console.print(f"[red]error:[/red] cannot load-test {escape(url)}: {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    files.write_json(result, out or files.REPORTS_DIR / "serve_load.json")
    console.print(result)


@app.command("run")
def run_all(experiments: list[str] = typer.Argument(None, help="Experiments to run (default: all)."), params: Path = ParamsOption, set_: list[str] = SetOption) -> None:
    """Run prepare, train, evaluate, export and bench of each experiment in this one process, then report."""
    from rnnzoo.pipeline.stages.bench import bench as run_bench
    from rnnzoo.pipeline.stages.evaluate import evaluate as run_evaluate
    from rnnzoo.pipeline.stages.export import export as run_export
    from rnnzoo.pipeline.stages.prepare import prepare as run_prepare
    from rnnzoo.pipeline.stages.train import train as run_train

    config = _load(params, set_)
    names = _names(config, experiments)
    for name in names:
        _run_stage(run_prepare, config, name)
        _run_stage(run_train, config, name)
        _run_stage(run_evaluate, config, name)
        _run_stage(run_export, config, name)
        _run_stage(run_bench, config, name)
    _run_stage(_print_report, config, names)


@app.command()
def report(experiments: list[str] = typer.Argument(None, help="Experiments to report (default: all)."), params: Path = ParamsOption, set_: list[str] = SetOption) -> None:
    """Table of every experiment's final metrics beside its baseline, the plots, and the MLflow UI command."""
    config = _load(params, set_)
    _run_stage(_print_report, config, _names(config, experiments))


def _print_report(config: config_module.Config, names: list[str]) -> None:
    from rnnzoo.pipeline import files, summary

    console.print(summary.table(config, names))
    bench = summary.bench_markdown(list(config.experiments))  # the file covers every experiment, whichever were named
    if bench is not None:
        path = files.write_text(bench, files.REPORTS_DIR / "bench_onnxruntime.md")
        console.print(bench, markup=False)
        console.print(f"saved {path}")
    for line in summary.footer(names):
        console.print(line)


class ReproduceScale(str, enum.Enum):
    smoke = "smoke"
    cpu = "cpu"
    paper = "paper"


@app.command()
def reproduce(
    claims: list[str] = typer.Argument(None, help="Claims to reproduce (default: all; `rnnzoo reproduce --list` names them)."),
    scale: ReproduceScale = typer.Option(ReproduceScale.smoke, help="smoke: seconds (CI); cpu: ~20 min a claim on 2 cores; paper: the paper's sizes (GPU)."),
    data: Path = typer.Option(None, help="Folder with mnist/ and ptb/ subfolders of real data, for the claims that read it."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    list_: bool = typer.Option(False, "--list", help="List the claims and exit."),
    rerun: bool = typer.Option(
        False, "--rerun", help="Run again runs already finished (the cache keys on params, not code); resume a stopped rerun without it."
    ),
) -> None:
    """Run each paper's claim (its cell and baseline, several seeds) through prepare, train and evaluate,
    then write reports/reproduction.md and reports/reproduction/<claim>.png with a verdict per claim."""
    from rnnzoo.pipeline import claim_report
    from rnnzoo.pipeline import claims as claims_module
    from rnnzoo.pipeline import reproduce as reproduce_module

    if list_:
        table = Table(title="rnnzoo claims")
        for column in ("claim", "statement", "paper's figure"):
            table.add_column(column)
        for claim in claims_module.CLAIMS.values():
            table.add_row(claim.name, claim.statement, claim.figure)
        console.print(table)
        return
    try:
        chosen = [claims_module.get(name) for name in claims or claims_module.CLAIMS]
        for claim in chosen:  # every claim's data is checked before the first run starts
            reproduce_module.data_folder(claim, scale.value, data)
    except claims_module.ClaimError as error:
        raise _fail(error, 2) from None
    for claim in chosen:
        runs = _run_stage(reproduce_module.run_claim, claim, scale.value, data, _device(device), console.print, rerun=rerun)
        verdict = claim.rule(reproduce_module.values_by_arm(claim, runs))
        console.print(f"[bold]{claim.name}[/bold] ({scale.value}): {verdict.verdict}: {escape(verdict.reason)}", soft_wrap=True)
    path = _run_stage(claim_report.write)
    if path is None:
        console.print("no claim has all its runs finished yet: no report written")
    else:
        console.print(f"saved {path} and the plots in {claim_report.PLOTS}")


@app.command()
def tasks() -> None:
    """List the tasks with their options."""
    import dataclasses

    from rnnzoo.pipeline.tasks import TASKS

    table = Table(title="rnnzoo tasks")
    table.add_column("task")
    table.add_column("options (defaults)")
    table.add_column("what it is")
    for name, task in sorted(TASKS.items()):
        options = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(task.Options))
        table.add_row(name, options, _summary(task))
    console.print(table)


if __name__ == "__main__":
    app()
