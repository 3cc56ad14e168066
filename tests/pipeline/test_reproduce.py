"""``rnnzoo reproduce``: every claim's smoke scale through the real stages in a temp dir, its report
and plots, the MLflow tags, the cache and resume, the decision rules on numbers fed to them, and
bad input (unknown claim or scale, missing data)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from rnnzoo.pipeline import claims, files, reproduce
from rnnzoo.pipeline.claims.base import FAILS, HOLDS, INCONCLUSIVE, SCALES, Arm, Better, Claim, Contrast, Reaches, Scale, Trend
from rnnzoo.pipeline.cli import app
from rnnzoo.pipeline.stages.prepare import prepare
from rnnzoo.pipeline.stages.train import train
from tests.pipeline.conftest import empty_store

ALL = list(claims.CLAIMS)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", empty_store(tmp_path))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def _invoke(*args: str):
    return CliRunner().invoke(app, ["reproduce", *args])


# One claim per kind of verdict rule (Reaches, Contrast, Better, Trend), across four task kinds: the
# default run's share; every claim runs in the slow test (64 s on 2 cores).
REPRESENTATIVE = ("janet_adding", "chrono_copy", "phased_async", "rhn_depth")


def test_the_representative_claims_cover_every_rule_kind():
    kinds = {type(claim.rule) for claim in claims.CLAIMS.values()}
    assert {type(claims.CLAIMS[name].rule) for name in REPRESENTATIVE} == kinds


def _check_smoke_run(project: Path, names: tuple[str, ...]) -> None:
    """Run ``names`` (all claims when empty) at smoke scale, check report, plots and runs, and that a rerun reads them back."""
    result = _invoke("--scale", "smoke", *names)
    assert result.exit_code == 0, result.output
    chosen = {name: claims.CLAIMS[name] for name in names} if names else claims.CLAIMS
    report = (project / "reports" / "reproduction.md").read_text()
    for name, claim in chosen.items():
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        assert "| smoke: " in row and any(f"**{verdict}**" in row for verdict in (HOLDS, FAILS, INCONCLUSIVE)), row
        assert claim.figure in row
        png = project / "reports" / "reproduction" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"reproduction/{name}.png" in report
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    expected = {(name, str(seed)) for name, claim in chosen.items() for seed in claim.scales["smoke"].seeds}
    assert {(r.data.tags["rnnzoo.claim"], r.data.tags["rnnzoo.seed"]) for r in runs} == expected
    assert {r.data.tags["rnnzoo.scale"] for r in runs} == {"smoke"}
    assert all("valid.loss" in r.data.metrics and "test.loss" in r.data.metrics for r in runs)

    again = _invoke("--scale", "smoke", "janet_adding", "rhn_depth")
    assert again.exit_code == 0, again.output
    progress = [line for line in again.output.splitlines() if line.startswith("[")]
    assert progress and all("done before" in line for line in progress), "a claim already run is read back, not rerun"
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == len(runs)


def test_representative_claims_smoke_scale_run_write_their_report_and_plot_and_are_not_run_twice(project: Path):
    _check_smoke_run(project, REPRESENTATIVE)


@pytest.mark.slow
def test_every_claims_smoke_scale_runs_writes_its_report_and_plot_and_is_not_run_twice(project: Path):
    _check_smoke_run(project, ())


# One arm, one seed: the cache and resume tests need one run, not a claim's several.
TINY = Claim(
    name="tiny",
    seed_repository="none",
    paper="none",
    figure="none",
    statement="none",
    metric="test.mse",
    rule=Reaches("janet", 0.1),
    scales={
        "smoke": Scale(
            (Arm("janet", "janet", "adding", 8, {"max_timescale": 8}, {"length": 8, "train_size": 64, "valid_size": 32, "test_size": 32}),),
            (0,),
            {"steps": 20, "batch_size": 16, "lr": 0.01, "eval_every": 10, "checkpoint_every": 5},
            "a test's run",
        )
    },
)


def test_a_run_whose_params_changed_is_run_again_and_rerun_runs_everything_again(project: Path):
    reproduce.run_claim(TINY, "smoke", None, "cpu", say=lambda line: None, progress=False)
    said: list[str] = []
    reproduce.run_claim(TINY, "smoke", None, "cpu", say=said.append, progress=False)
    assert len(said) == 1 and "done before" in said[0]
    _, planned = reproduce.plan(TINY, "smoke", None, "cpu")
    stamp = files.reports_dir(planned[0].experiment) / reproduce.STAMP
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "params_hash": "other"}))
    said.clear()
    reproduce.run_claim(TINY, "smoke", None, "cpu", say=said.append, progress=False)
    assert len(said) == 1 and "done before" not in said[0]
    said.clear()
    reproduce.run_claim(TINY, "smoke", None, "cpu", say=said.append, progress=False, rerun=True)
    assert len(said) == 1 and "done before" not in said[0], "--rerun runs a finished run again"


def test_a_stopped_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(project: Path, tmp_path_factory, monkeypatch):
    config, planned = reproduce.plan(TINY, "smoke", None, "cpu")
    name = planned[0].experiment
    prepare(config, name)
    train(config, name, stop_after=7, progress=False)  # as a stopped run leaves it: a checkpoint at step 7
    assert files.checkpoint_path(name).is_file()
    said: list[str] = []
    resumed = reproduce.run_claim(TINY, "smoke", None, "cpu", say=said.append, progress=False)[0]

    fresh_dir = tmp_path_factory.mktemp("fresh")
    monkeypatch.chdir(fresh_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", empty_store(fresh_dir))
    fresh = reproduce.run_claim(TINY, "smoke", None, "cpu", say=lambda line: None, progress=False)[0]
    assert resumed.metrics == fresh.metrics
    strip = lambda history: [{k: v for k, v in r.items() if k != "steps_per_second"} for r in history]
    assert strip(resumed.history) == strip(fresh.history) and resumed.valid_history == fresh.valid_history


def _values(claim: Claim, verdict: str) -> dict[str, list[float]]:
    """Numbers for which ``claim``'s rule must say ``verdict``; every arm of the claim gets some."""
    arms = {arm.label for scale in claim.scales.values() for arm in scale.arms}
    values = {arm: [0.5, 0.5, 0.5] for arm in arms}
    rule = claim.rule
    if isinstance(rule, Better):
        sign = 1.0 if rule.higher_is_better else -1.0
        base = [0.50, 0.51, 0.52]
        cell = {HOLDS: [v + sign * 0.3 for v in base], FAILS: [v - sign * 0.3 for v in base], INCONCLUSIVE: [0.3, 0.5, 0.8]}[verdict]
        values.update({rule.cell: cell, rule.baseline: base})
    elif isinstance(rule, (Reaches, Contrast)):
        past = rule.bound * 0.5 if rule.below else rule.bound * 2
        short = rule.bound * 2 if rule.below else rule.bound * 0.5
        arm = rule.arm if isinstance(rule, Reaches) else rule.cell
        values[arm] = {HOLDS: [past] * 3, FAILS: [short] * 3, INCONCLUSIVE: [past, short, past]}[verdict]
        if isinstance(rule, Contrast):
            values[rule.baseline] = [short] * 3
    elif isinstance(rule, Trend):
        step = 1.0 if rule.higher_is_better else -1.0
        ramp = {HOLDS: step, FAILS: -step, INCONCLUSIVE: 0.0}[verdict]
        for index, label in enumerate(rule.labels):
            values[label] = [10 + ramp * index * 2 + noise for noise in (-0.1, 0.0, 0.1)]
    else:
        raise TypeError(f"no numbers for a rule of type {type(rule).__name__}: add them here")
    return values


@pytest.mark.parametrize("verdict", [HOLDS, FAILS, INCONCLUSIVE])
@pytest.mark.parametrize("name", ALL)
def test_each_claims_rule_says_what_the_numbers_say(name: str, verdict: str):
    claim = claims.get(name)
    decided = claim.rule(_values(claim, verdict))
    assert decided.verdict == verdict, decided.reason
    assert decided.reason


@pytest.mark.parametrize("name", ALL)
def test_each_claims_rule_reads_arms_that_every_scale_runs_with_three_seeds_at_cpu_scale(name: str):
    claim = claims.get(name)
    rule = claim.rule
    read = {getattr(rule, field) for field in ("cell", "baseline", "arm") if hasattr(rule, field)} | set(getattr(rule, "labels", ()))
    assert read
    for scale in SCALES:
        assert read <= {arm.label for arm in claim.scales[scale].arms}, f"{name} at {scale}"
    assert len(claim.scales["cpu"].seeds) >= 3 and len(claim.scales["paper"].seeds) >= 3


def test_the_rhn_depths_are_matched_in_parameters():
    from rnnzoo.pipeline.claims.rhn_depth import recurrent_parameters

    claim = claims.get("rhn_depth")
    for scale in ("cpu", "paper"):
        counts = [recurrent_parameters(arm.hidden_size, arm.cell_options["depth"]) for arm in claim.scales[scale].arms]
        assert max(counts) / min(counts) < 1.03, counts


def test_an_unknown_claim_is_refused_naming_the_claims(project: Path):
    result = _invoke("janet_addding")
    assert result.exit_code == 2
    assert "unknown claim 'janet_addding'" in result.output and "did you mean 'janet_adding'" in result.output
    assert "rhn_depth" in result.output and "Traceback" not in result.output


def test_an_unknown_scale_is_refused_naming_the_scales(project: Path):
    result = _invoke("--scale", "huge")
    assert result.exit_code == 2
    assert "huge" in result.output and all(scale in result.output for scale in SCALES)


def test_missing_data_says_which_files_to_put_where_before_anything_runs(project: Path):
    result = _invoke("janet_adding", "janet_smnist", "--scale", "cpu")
    assert result.exit_code == 2
    assert "--data DIR" in result.output and "DIR/mnist" in result.output and "t10k-images-idx3-ubyte.gz" in result.output
    assert not (project / "data").exists(), "nothing runs before every claim's data is there"

    (project / "given" / "ptb").mkdir(parents=True)
    (project / "given" / "ptb" / "ptb.valid.txt").write_text("a b c\n")
    result = _invoke("rhn_depth", "--scale", "cpu", "--data", str(project / "given"))
    assert result.exit_code == 2
    assert f"{project / 'given' / 'ptb'} lacks ptb.test.txt" in result.output


def test_list_names_every_claim(project: Path):
    result = _invoke("--list")
    assert result.exit_code == 0
    assert all(name in result.output for name in ALL)
