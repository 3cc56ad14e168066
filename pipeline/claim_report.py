"""``reports/reproduction.md`` and ``reports/reproduction/<claim>.png``: every claim's verdict beside
the paper's figure, from the runs ``rnnzoo reproduce`` finished.

Each claim is shown at the largest scale whose runs have all finished (paper, then cpu, then
smoke), with the time its runs took. Its plot overlays the valid curves of every arm, one line
per seed, with the paper's figure as a dashed line where it is on the curve's scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from rnnzoo.pipeline import outputs
from rnnzoo.pipeline.claims import CLAIMS
from rnnzoo.pipeline.claims.base import SCALES, Claim, Run, Verdict, mean_std
from rnnzoo.pipeline.plots import plt, save_figure
from rnnzoo.pipeline.reproduce import finished_runs, values_by_arm

REPORT = Path("reports") / "reproduction.md"
PLOTS = Path("reports") / "reproduction"


def _cell(values: Sequence[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]  # NaN: a run without that number
    if not finite:
        return "—"
    mean, std = mean_std(finite)
    return f"{mean:.4g} ± {std:.2g}"


def _second_figure(claim: Claim, run: Run) -> str:
    """The metrics.json key shown beside the claim's own number: a test figure that says something
    else (accuracy, perplexity, loss), else the valid loss."""
    for key in ("test.accuracy", "test.perplexity", "test.loss", "valid.loss"):
        if key in run.metrics and key != claim.metric and run.metrics[key] != run.metrics.get(claim.metric):
            return key
    return "valid.loss"


def plot(claim: Claim, runs: Sequence[Run], path: Path) -> Path:
    """The arms' curves, one line per seed, and the paper's figure where it is on this scale."""
    figure, axis = plt.subplots(figsize=(7, 4.2))
    colours = {arm: f"C{index}" for index, arm in enumerate(dict.fromkeys(run.arm for run in runs))}
    key = claim.curve
    for run in runs:
        records = run.valid_history if run.valid_history else run.history
        name = key if run.valid_history else "loss"
        label = run.arm if run.seed == min(r.seed for r in runs if r.arm == run.arm) else None
        axis.plot([r["step"] for r in records], [r[name] for r in records], color=colours[run.arm], alpha=0.8, label=label)
    if claim.reference is not None and key == "accuracy":
        axis.axhline(claim.reference, color="grey", linestyle="--", label=f"paper {claim.reference:g}")
    axis.set(xlabel="training step", ylabel=f"valid {key}", title=f"{claim.name}: valid {key}, one line per seed")
    if key == "loss":
        axis.set_yscale("log")
    axis.legend(fontsize=8)
    return save_figure(figure, path)


def _section(claim: Claim, scale: str, runs: Sequence[Run], verdict: Verdict, plot_path: Path) -> list[str]:
    setting = claim.scales[scale]
    second = _second_figure(claim, runs[0])
    lines = [
        f"## {claim.name}: {verdict.verdict}",
        "",
        f"{claim.paper}. Seed: {claim.seed_repository}.",
        "",
        f"**Claim.** {claim.statement}. **Paper.** {claim.figure}.",
        "",
        f"**Runs ({scale}).** {setting.differs}; seeds {', '.join(map(str, setting.seeds))}.",
        "",
        f"**Verdict: {verdict.verdict}.** {verdict.reason}.",
        "",
        f"| arm | {claim.metric} | {second} | step of the kept model | seconds (all seeds) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arm, values in values_by_arm(claim, runs).items():
        arm_runs = [run for run in runs if run.arm == arm]
        figures = [float(run.metrics.get(second, math.nan)) for run in arm_runs]
        kept = ", ".join(str(int(run.metrics["selected_step"])) if "selected_step" in run.metrics else "last" for run in arm_runs)
        lines.append(f"| {arm} | {_cell(values)} | {_cell(figures)} | {kept} | {sum(run.seconds for run in arm_runs):.0f} |")
    lines += ["", f"![{claim.name}]({plot_path.relative_to(REPORT.parent).as_posix()})", ""]
    return lines


def write() -> Path | None:
    """Write the report of every claim with finished runs; returns its path, None when no claim
    has finished runs."""
    found = []
    for claim in CLAIMS.values():
        done = next(((scale, runs) for scale in reversed(SCALES) if (runs := finished_runs(claim, scale))), None)
        if done is not None:
            found.append((claim, *done))
    if not found:
        return None
    rows, sections = [], []
    with outputs.together() as staged:  # the report and its plots appear together
        plot_folder = staged.folder(PLOTS)
        for claim, scale, runs in found:
            values = values_by_arm(claim, runs)
            verdict = claim.rule(values)
            plot(claim, runs, plot_folder / f"{claim.name}.png")
            ours = "; ".join(f"{arm} {_cell(v)}" for arm, v in values.items())
            minutes = sum(run.seconds for run in runs) / 60
            rows.append(
                f"| {claim.name} | {claim.figure} | {claim.metric}: {ours} | {scale}: {claim.scales[scale].differs} | "
                f"**{verdict.verdict}** | {minutes:.1f} min |"
            )
            sections += _section(claim, scale, runs, verdict, PLOTS / f"{claim.name}.png")
        text = "\n".join(
            [
                "# The seeds' claims, reproduced",
                "",
                (
                    "Written by `rnnzoo reproduce`; each claim at the largest scale whose runs have all finished. Verdicts come "
                    "from each claim's rule on the measured numbers (`pipeline/claims/`): a difference smaller than the spread "
                    "between seeds is *inconclusive*, not a win."
                ),
                "",
                "| claim | paper's figure | ours (mean ± std over seeds) | scale and data | verdict | time |",
                "| --- | --- | --- | --- | --- | --- |",
                *rows,
                "",
                *sections,
            ]
        )
        staged.file(REPORT).write_text(text, encoding="utf-8")
    return REPORT
