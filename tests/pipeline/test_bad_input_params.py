"""Every bad params input ends in one line, ``error: ...``, naming the bad value and what is allowed:
never a traceback, never silently accepted. Through the CLI, as a user meets it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from rnnzoo.pipeline import config
from rnnzoo.pipeline.cli import app
from tests.pipeline.conftest import tiny_params, write_params

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
# Every command that reads params goes through the same loader.
PARAMS_COMMANDS = ("prepare", "train", "evaluate", "export", "bench", "run", "report")


def refused(result: Result, exit_code: int, *fragments: str) -> str:
    """Assert one ``error:`` line holding every fragment, the exit code, and no escaped exception."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), result.exc_info  # nothing escaped the CLI's handler
    assert "Traceback" not in result.output and "Aborted" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _params(here: Path, mutate: Callable[[dict[str, Any]], Any] = lambda p: None) -> Path:
    params = tiny_params()
    mutate(params)
    return write_params(here / "params.yaml", params)


def _exp(params: dict[str, Any]) -> dict[str, Any]:
    return params["experiments"]["add-janet"]


# --- 1. the YAML itself -----------------------------------------------------------------------

YAML_ERRORS = {
    "unclosed flow mapping": ("prepare: {seed: 0\ntrain: {}\n", ["params.yaml:2:6", "not valid YAML", "expected ',' or '}'"]),
    "bad indentation": ("train:\n  lr: 1\n lr: 2\n", ["params.yaml:3:2", "not valid YAML", "expected <block end>"]),
    "tab indentation": ("train:\n\tlr: 1\n", ["params.yaml:2:1", "not valid YAML", "'\\t'"]),
    "unclosed quote": ('train: {device: "cpu}\n', ["params.yaml:2:1", "not valid YAML", "end of stream"]),
    "two documents": ("train: {}\n---\nbench: {}\n", ["params.yaml:2:1", "not valid YAML", "another document"]),
    "python tag": ("train: !!python/object:os.system {}\n", ["params.yaml:1:8", "not valid YAML", "python/object:os.system"]),
    "empty file": ("", ["params.yaml is empty", "expected a mapping with the sections prepare, train"]),
    "a list": ("- train\n- bench\n", ["params.yaml holds ['train', 'bench']", "expected a mapping with the sections"]),
}


@pytest.mark.parametrize("case", sorted(YAML_ERRORS))
def test_a_params_file_that_is_not_yaml_is_named_with_line_and_column(case: str, here: Path) -> None:
    text, fragments = YAML_ERRORS[case]
    (here / "params.yaml").write_text(text)
    refused(runner.invoke(app, ["prepare"]), 2, *fragments)


def test_a_params_file_that_is_not_text_is_named(here: Path) -> None:
    (here / "params.yaml").write_bytes(b"\xff\xfe\x00garbage")
    refused(runner.invoke(app, ["train"]), 2, "params.yaml is not UTF-8 text", "expected a YAML file")


@pytest.mark.parametrize("command", PARAMS_COMMANDS)
def test_every_command_names_a_yaml_error(command: str, here: Path) -> None:
    (here / "params.yaml").write_text("train: [1\n")
    refused(runner.invoke(app, [command]), 2, "params.yaml:2:1", "not valid YAML")


def test_a_missing_params_file_is_named(here: Path) -> None:
    refused(runner.invoke(app, ["train", "--params", "nope.yaml"]), 2, "nope.yaml does not exist")


# --- 2. --set ---------------------------------------------------------------------------------

SET_ERRORS = {
    "value not YAML": ("train.lr=[1", ["'train.lr=[1'", "the value '[1' is not valid YAML", "expected e.g. 0.01, true, [1, 2]"]),
    "unclosed quote": ("train.device='cpu", ["'cpu", "not valid YAML"]),
    "no equals": ("train.lr", ["--set 'train.lr'", "expected KEY=VALUE"]),
    "empty key": ("=0.1", ["the key '' has an empty part", "KEY=VALUE"]),
    "empty part": ("train..lr=0.1", ["'train..lr'", "empty part"]),
    "into a value": ("train.lr.x=1", ["train.lr = 0.01 is not a section"]),
    "unknown section": ("nope.x=1", ["unknown key nope", "allowed sections: prepare, train, evaluate, bench, experiments"]),
    "unknown key": ("train.lrr=0.1", ["unknown key train.lrr (did you mean lr?)", "allowed: device, seed"]),
    "unknown experiment field": ("experiments.add-janet.cel=lstm", ["experiments.add-janet.cel (did you mean cell?)"]),
    "bad value": ("train.lr=-1", ["train.lr must be", "got -1", "a number > 0"]),
    "long bad value": ("train.optimizer=" + "x" * 500, ["train.optimizer must be", "got 'xxxx", "...", "one of 'adam'"]),
}


@pytest.mark.parametrize("case", sorted(SET_ERRORS))
def test_a_bad_set_is_named(case: str, here: Path) -> None:
    override, fragments = SET_ERRORS[case]
    _params(here)
    line = refused(runner.invoke(app, ["prepare", "--set", override]), 2, *fragments)
    assert len(line) < 400, "a long value is cut"
    assert not (here / "data").exists()


def test_set_on_an_empty_params_file_is_named(here: Path) -> None:
    (here / "params.yaml").write_text("")
    refused(runner.invoke(app, ["train", "--set", "train.lr=0.1"]), 2, "params.yaml is empty", "expected a mapping")


# --- 3. unknown keys, at every level ----------------------------------------------------------

UNKNOWN_KEYS = {
    "top-level section": (lambda p: p.update(trainn={}), "trainn (did you mean train?)", "allowed sections: prepare, train"),
    "prepare": (lambda p: p["prepare"].update(sed=1), "prepare.sed (did you mean seed?)", "allowed: seed, data_dir"),
    "train": (lambda p: p["train"].update(step=3), "train.step (did you mean steps?)", "allowed: device"),
    "evaluate": (lambda p: p["evaluate"].update(batchsize=3), "evaluate.batchsize (did you mean batch_size?)", "allowed: batch_size"),
    "bench": (lambda p: p["bench"].update(repeat=3), "bench.repeat (did you mean repeats?)", "allowed: batch_sizes, repeats"),
    "experiment field": (lambda p: _exp(p).update(hiden_size=3), "experiments.add-janet.hiden_size (did you mean hidden_size?)", "allowed: cell, task"),
    "experiment train": (lambda p: _exp(p)["train"].update(optimiser="sgd"), "experiments.add-janet.train.optimiser (did you mean optimizer?)", "allowed: device"),
    "cell option": (lambda p: _exp(p)["cell_options"].update(max_timscale=3), "cell_options.max_timscale (did you mean max_timescale?)", "allowed for cell janet: num_layers"),
    "task option": (lambda p: _exp(p)["task_options"].update(lenght=3), "task_options.lenght (did you mean length?)", "allowed for task adding: length"),
    "model option": (lambda p: _exp(p)["model_options"].update(tie_weight=True), "model_options.tie_weight (did you mean tie_weights?)", "allowed: embedding_size, tie_weights"),
    "not a string": (lambda p: p.update({1: 2}), "unknown key 1;", "allowed sections"),
}


@pytest.mark.parametrize("case", sorted(UNKNOWN_KEYS))
def test_an_unknown_key_is_refused_with_the_closest_known_one(case: str, here: Path) -> None:
    mutate, *fragments = UNKNOWN_KEYS[case]
    _params(here, mutate)
    refused(runner.invoke(app, ["prepare"]), 2, "unknown key", *fragments)


def test_an_unknown_experiment_on_the_command_line_suggests_the_closest(here: Path) -> None:
    _params(here)
    refused(runner.invoke(app, ["train", "add-jant"]), 2, "unknown experiment 'add-jant' (did you mean 'add-janet'?)", "add-janet, vec-unfolded")


def test_every_params_key_dvc_reads_is_a_known_section() -> None:
    """dvc.yaml's stages name params by their section; each must be one the config accepts (params.yaml
    and the profiles themselves load in test_config)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    named = {param.split(".")[0] for stage in stages.values() for param in stage["do"].get("params", [])}
    assert named and named <= set(config.SECTIONS), named - set(config.SECTIONS)


# --- 4. options out of a cell's (or the model's, or the task's) range --------------------------

def _cell(cell: str, **options: Any) -> Callable[[dict[str, Any]], None]:
    return lambda p: _exp(p).update(cell=cell, cell_options=options)


OUT_OF_RANGE = {
    "dropout above 1": (_cell("janet", num_layers=2, dropout=1.5), ["cell_options.dropout must be", "got 1.5", "a number in [0, 1)"]),
    "dropout of 1": (_cell("lstm", num_layers=2, dropout=1), ["cell_options.dropout must be", "got 1", "[0, 1)"]),
    "no layers": (_cell("lstm", num_layers=0), ["cell_options.num_layers must be", "got 0", "positive integer"]),
    "layers as a float": (_cell("lstm", num_layers=2.0), ["cell_options.num_layers must be", "got 2.0", "positive integer"]),
    "bidirectional as a string": (_cell("lstm", bidirectional="yes"), ["cell_options.bidirectional must be", "got 'yes'", "true or false"]),
    "time-major layer": (_cell("lstm", batch_first=False), ["cell_options.batch_first must be", "got False", "true"]),
    "unknown time loop": (_cell("lstm", time_loop="while"), ["cell_options.time_loop must be", "got 'while'", "'python', 'scan'"]),
    "janet timescale": (_cell("janet", max_timescale=1), ["cell_options.max_timescale must be", "got 1", "a number > 2.0"]),
    "janet shift": (_cell("janet", shift="left"), ["cell_options.shift must be", "got 'left'", "a number"]),
    "chrono without timescale": (_cell("chrono_lstm"), ["cell_options.max_timescale is missing", "cell 'chrono_lstm' requires it"]),
    "indrnn activation": (_cell("indrnn", activation="tanhh"), ["cell_options.activation must be", "got 'tanhh'", "'relu'"]),
    "indrnn last layer without T": (_cell("indrnn", last_layer_init=True), ["cell_options.last_layer_init = True is not allowed", "needs sequence_length"]),
    "indrnn bound": (_cell("indrnn", recurrent_max_abs=0), ["cell_options.recurrent_max_abs must be", "got 0", "a number > 0.0"]),
    "phased ratio": (_cell("phased_lstm", ratio_on=0), ["cell_options.ratio_on must be", "got 0", "(0.0, 1.0]"]),
    "phased periods": (_cell("phased_lstm", log_period_low=3.0, log_period_high=2.0), ["cell_options.log_period_high must be", "got 2.0", "a number >= 3.0"]),
    "rhn depth": (_cell("rhn", depth=0), ["cell_options.depth must be", "got 0", "positive integer"]),
    "rhn state dropout": (_cell("rhn", state_dropout=-0.1), ["cell_options.state_dropout must be", "got -0.1", "a number in [0, 1)"]),
    "embedding size": (lambda p: _exp(p)["model_options"].update(embedding_size=-4), ["model_options.embedding_size must be", "got -4", "an integer >= 0"]),
    "tie_weights as a string": (lambda p: _exp(p)["model_options"].update(tie_weights="false"), ["model_options.tie_weights must be", "got 'false'", "true or false"]),
    "tied sizes differ": (
        lambda p: _exp(p).update(task="ptb", task_options={}, model_options={"embedding_size": 4, "tie_weights": True}),
        ["model_options.tie_weights = True is not allowed", "embedding_size equals the layer's output size"],
    ),
    "task option": (lambda p: _exp(p)["task_options"].update(length=1), ["task_options.length must be", "got 1", "must be >= 2"]),
    "unfolded dropout": (
        lambda p: p["experiments"]["vec-unfolded"]["cell_options"].update(dropout=1.0),
        ["experiments.vec-unfolded.cell_options.dropout must be", "got 1.0", "[0, 1)"],
    ),
    # Decided by the task's head, known before its data exists: every task kind where it matters.
    "model options on a task that is no language model": (
        lambda p: _exp(p)["model_options"].update(embedding_size=4),
        ["model_options must be", "got {'embedding_size': 4}", "task 'adding' is not a language model"],
    ),
    "bidirectional language model": (
        lambda p: _exp(p).update(task="ptb", task_options={}, cell_options={"max_timescale": 6, "bidirectional": True}),
        ["cell_options.bidirectional = True is not allowed", "reads the future", "'language_model'"],
    ),
    "bidirectional step classifier": (
        lambda p: _exp(p).update(task="copy", task_options={}, cell_options={"max_timescale": 6, "bidirectional": True}),
        ["cell_options.bidirectional = True is not allowed", "reads the future", "'step_classification'"],
    ),
    "unfolded model options": (
        lambda p: p["experiments"]["vec-unfolded"]["model_options"].update(embedding_size=8),
        ["experiments.vec-unfolded.model_options must be", "got {'embedding_size': 8}", "takes none"],
    ),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_an_option_out_of_range_is_refused_when_the_params_load(case: str, here: Path) -> None:
    mutate, fragments = OUT_OF_RANGE[case]
    _params(here, mutate)
    experiment = "vec-unfolded" if "unfolded" in case else "add-janet"
    refused(runner.invoke(app, ["prepare"]), 2, f"experiments.{experiment}.", *fragments)
    assert not (here / "data").exists(), "refused before any work"


def test_the_model_check_costs_nothing_however_wide(here: Path) -> None:
    """Built on the meta device: a width whose weights would need terabytes loads at once."""
    _params(here, lambda p: _exp(p).update(hidden_size=1_000_000))
    assert config.load(here / "params.yaml").experiment("add-janet").hidden_size == 1_000_000
    _params(here, lambda p: _exp(p).update(hidden_size=1_000_000, cell_options={"dropout": 1.5}))
    refused(runner.invoke(app, ["train"]), 2, "cell_options.dropout must be", "got 1.5")


# --- 5. numbers as YAML 1.1 reads them --------------------------------------------------------

NUMERIC_STRINGS = {
    "train.lr": (lambda p: p["train"].update(lr="1e-3"), lambda c: c.train.lr, 1e-3),
    "upper-case exponent": (lambda p: p["train"].update(weight_decay="1E-4"), lambda c: c.train.weight_decay, 1e-4),
    "positive exponent": (lambda p: p["train"].update(grad_clip="3e2"), lambda c: c.train.grad_clip, 300.0),
    "experiment train": (lambda p: _exp(p)["train"].update(lr="5e-3"), lambda c: c.experiment("add-janet").train.lr, 5e-3),
    "cell option": (lambda p: _exp(p)["cell_options"].update(shift="2e0"), lambda c: c.experiment("add-janet").cell_options["shift"], 2.0),
    "task option": (
        lambda p: _exp(p).update(cell="phased_lstm", task="frequency", cell_options={"leak": "1e-3"}, task_options={"duration": "5e1"}),
        lambda c: (c.experiment("add-janet").cell_options["leak"], c.experiment("add-janet").task_options["duration"]), (1e-3, 50.0),
    ),
}


@pytest.mark.parametrize("case", sorted(NUMERIC_STRINGS))
def test_a_float_written_as_1e_minus_3_is_read_as_the_number(case: str, here: Path) -> None:
    mutate, read, expected = NUMERIC_STRINGS[case]
    loaded = config.load(_params(here, mutate))
    assert read(loaded) == expected


def test_a_float_set_on_the_command_line_is_read_as_the_number(here: Path) -> None:
    loaded = config.load(_params(here), ["train.lr=1e-3", "experiments.add-janet.train.lr=2E-4"])
    assert loaded.train.lr == 1e-3 and loaded.experiment("add-janet").train.lr == 2e-4


INTEGER_FIELDS = {
    "train.steps": (lambda p: p["train"].update(steps="1e3"), ["train.steps must be", "got '1e3'", "an integer (write 1000)"]),
    "hidden_size": (lambda p: _exp(p).update(hidden_size="1e2"), ["experiments.add-janet.hidden_size must be", "got '1e2'", "(write 100)"]),
    "not integral": (lambda p: p["train"].update(batch_size="2.5"), ["train.batch_size must be", "got '2.5'", "an integer"]),
    "cell option": (lambda p: _exp(p)["cell_options"].update(num_layers="2e0"), ["cell_options.num_layers must be", "got '2e0'", "(write 2)"]),
    "task option": (lambda p: _exp(p)["task_options"].update(length="1e1"), ["task_options.length must be", "got '1e1'", "(write 10)"]),
    "a float": (lambda p: p["train"].update(steps=1e3), ["train.steps must be", "got 1000.0", "an integer >= 1"]),
}


@pytest.mark.parametrize("case", sorted(INTEGER_FIELDS))
def test_an_integer_field_refuses_a_number_that_is_not_an_integer(case: str, here: Path) -> None:
    mutate, fragments = INTEGER_FIELDS[case]
    _params(here, mutate)
    refused(runner.invoke(app, ["train"]), 2, *fragments)


def test_a_numeric_string_stays_a_string_where_a_string_is_expected(here: Path) -> None:
    loaded = config.load(_params(here, lambda p: p["prepare"].update(data_dir="1e3")))
    assert loaded.prepare.data_dir == "1e3"
