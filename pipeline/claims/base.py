"""What a reproduced claim is: a paper's statement, the runs that test it at three scales, and a
decision rule computed from the measured numbers.

A claim's runs are experiments like those of ``params.yaml`` (one per arm and seed), trained and
evaluated by the pipeline's own stages (see ``pipeline.reproduce``). Its rule reads one number per
run (``Claim.metric`` of the run's ``metrics.json``, or ``Claim.measure`` of the whole run) and
says whether the claim holds, does not hold, or is inconclusive, and why, in words.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# smoke: seconds, for CI; cpu: the claim's runs together in about 20 minutes on 2 cores;
# paper: the paper's sizes, steps and data, for a GPU.
SCALES = ("smoke", "cpu", "paper")
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
# Where real data is read from: ``rnnzoo reproduce --data DIR`` holds one folder per kind
# (DIR/mnist for both MNIST kinds).
DATA_FILES = {
    "mnist": "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (the MNIST test pair)",
    "mnist_standard": "the MNIST train and test pairs (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...)",
    "ptb": "ptb.valid.txt and ptb.test.txt (Mikolov's Penn Treebank; training reads ptb.valid.txt, evaluation ptb.test.txt)",
}


# cpu scale's MNIST: the 10,000 test images alone, split 8,000 / 1,000 / 1,000 whatever else the
# folder holds, and nothing downloaded (the report says what the runs read).
CPU_MNIST = {"source": "mnist", "download": False, "train_files": False}


@dataclasses.dataclass(frozen=True)
class Arm:
    """One model of a claim, as an experiment of ``params.yaml`` (``train`` overrides the scale's).
    String task options may name ``{data}``: the scale's data folder."""

    label: str
    cell: str
    task: str
    hidden_size: int
    cell_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    task_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    model_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    train: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Scale:
    """A claim's runs at one scale: every arm once per seed."""

    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    train: Mapping[str, Any]  # the train section shared by the arms (params.yaml's keys)
    differs: str  # how these runs differ from the paper's (data, length, steps, width), in words
    data: str | None = None  # a key of DATA_FILES: the real data these runs read


@dataclasses.dataclass(frozen=True)
class Run:
    """What one finished run left: its metrics.json, train_history.json and valid_history.json."""

    arm: str
    seed: int
    metrics: Mapping[str, float]
    history: Sequence[Mapping[str, Any]]
    valid_history: Sequence[Mapping[str, Any]]
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Verdict:
    verdict: str  # HOLDS, FAILS or INCONCLUSIVE
    reason: str  # the numbers that decided it


# One number per run, by arm label: the rule's input.
Values = Mapping[str, Sequence[float]]
Rule = Callable[[Values], Verdict]  # Better, Reaches, Contrast or Trend


@dataclasses.dataclass(frozen=True)
class Claim:
    name: str
    seed_repository: str  # the original code this claim comes from ("seed 000")
    paper: str  # authors, title, venue
    figure: str  # the paper's figure(s) for this claim, in words
    statement: str  # what is claimed, in one sentence
    metric: str  # the number each run is judged by: a key of metrics.json, or what ``measure`` computes
    rule: Rule
    scales: Mapping[str, Scale]
    higher_is_better: bool = False  # of ``metric``
    measure: Callable[[Run], float] | None = None  # default: run.metrics[metric]
    reference: float | None = None  # the paper's figure on the metric's scale, drawn on the plot
    curve: str = "loss"  # the plot overlays this valid-history key (train loss where there is none)

    def value(self, run: Run) -> float:
        """The number ``run`` is judged by."""
        return self.measure(run) if self.measure is not None else float(run.metrics[self.metric])


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def describe(label: str, values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return f"{label} {mean:.4g} ± {std:.2g}"


@dataclasses.dataclass(frozen=True)
class Better:
    """``cell`` beats ``baseline``: holds when its mean is better by more than the larger of the two
    seed spreads (sample std), does not hold when it is worse by more, inconclusive in between."""

    cell: str
    baseline: str
    higher_is_better: bool

    def __call__(self, values: Values) -> Verdict:
        cell, baseline = self.cell, self.baseline
        if min(len(values[cell]), len(values[baseline])) < 2:
            return Verdict(INCONCLUSIVE, "fewer than 2 seeds an arm: no spread to judge a difference by")
        (a, sa), (b, sb) = mean_std(values[cell]), mean_std(values[baseline])
        gain = (a - b) if self.higher_is_better else (b - a)
        spread = max(sa, sb)
        numbers = f"{describe(cell, values[cell])} vs {describe(baseline, values[baseline])}"
        if gain > spread:
            return Verdict(HOLDS, f"{numbers}: {cell} better by {gain:.3g}, more than the seeds' spread {spread:.2g}")
        if gain < -spread:
            return Verdict(FAILS, f"{numbers}: {cell} worse by {-gain:.3g}, more than the seeds' spread {spread:.2g}")
        return Verdict(INCONCLUSIVE, f"{numbers}: the difference {abs(gain):.3g} is within the seeds' spread {spread:.2g}")


def _past(value: float, bound: float, below: bool) -> bool:
    return value < bound if below else value > bound


@dataclasses.dataclass(frozen=True)
class Reaches:
    """``arm`` gets below (or above) ``bound``: holds when every seed does, does not hold when none
    does, inconclusive when some do."""

    arm: str
    bound: float
    below: bool = True
    what: str = "bound"

    def __call__(self, values: Values) -> Verdict:
        hits = [_past(v, self.bound, self.below) for v in values[self.arm]]
        side = "<" if self.below else ">"
        numbers = f"{self.arm}: {', '.join(f'{v:.4g}' for v in values[self.arm])} ({self.what} {side} {self.bound:.4g})"
        if all(hits):
            return Verdict(HOLDS, f"{numbers}: every seed")
        if not any(hits):
            return Verdict(FAILS, f"{numbers}: no seed")
        return Verdict(INCONCLUSIVE, f"{numbers}: {sum(hits)} of {len(hits)} seeds")


@dataclasses.dataclass(frozen=True)
class Contrast:
    """``cell`` gets past ``bound`` where ``baseline`` does not: holds when every seed of the cell
    does and no seed of the baseline does; does not hold when no seed of the cell does, or every
    seed of the baseline does too (the contrast the paper draws is then not there); else inconclusive."""

    cell: str
    baseline: str
    bound: float
    below: bool = True
    what: str = "bound"

    def __call__(self, values: Values) -> Verdict:
        cell_hits = [_past(v, self.bound, self.below) for v in values[self.cell]]
        base_hits = [_past(v, self.bound, self.below) for v in values[self.baseline]]
        side = "<" if self.below else ">"
        numbers = (
            f"{describe(self.cell, values[self.cell])}, {describe(self.baseline, values[self.baseline])}; "
            f"{self.what} {side} {self.bound:.4g}: {self.cell} {sum(cell_hits)}/{len(cell_hits)} seeds, "
            f"{self.baseline} {sum(base_hits)}/{len(base_hits)}"
        )
        if all(cell_hits) and not any(base_hits):
            return Verdict(HOLDS, numbers)
        if not any(cell_hits) or all(base_hits):
            return Verdict(FAILS, numbers)
        return Verdict(INCONCLUSIVE, numbers)


@dataclasses.dataclass(frozen=True)
class Trend:
    """The metric improves along ``labels`` (for example with depth): holds when the means improve
    at every step and the last beats the first by more than the seeds' spread; does not hold when
    the last is worse than the first by more than it; inconclusive otherwise."""

    labels: tuple[str, ...]
    higher_is_better: bool

    def __call__(self, values: Values) -> Verdict:
        if min(len(values[label]) for label in self.labels) < 2:
            return Verdict(INCONCLUSIVE, "fewer than 2 seeds an arm: no spread to judge a difference by")
        stats = [mean_std(values[label]) for label in self.labels]
        means = [mean for mean, _ in stats]
        sign = 1.0 if self.higher_is_better else -1.0
        gain = sign * (means[-1] - means[0])
        spread = max(std for _, std in stats)
        monotone = all(sign * (b - a) > 0 for a, b in itertools.pairwise(means))
        numbers = "; ".join(describe(label, values[label]) for label in self.labels)
        if monotone and gain > spread:
            return Verdict(HOLDS, f"{numbers}: improves at every step, {gain:.3g} in all (spread {spread:.2g})")
        if gain < -spread:
            return Verdict(FAILS, f"{numbers}: the last is worse than the first by {-gain:.3g} (spread {spread:.2g})")
        why = "not at every step" if not monotone else "within the spread"
        return Verdict(INCONCLUSIVE, f"{numbers}: {why} (gain {gain:.3g}, spread {spread:.2g})")
