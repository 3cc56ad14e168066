"""Frequency discrimination: balanced in-band classes, sampling grids and timestamps."""

from __future__ import annotations

import math

import pytest
import torch

from rnnzoo.pipeline.tasks import make_task
from rnnzoo.pipeline.tasks.base import Split, TaskError


def prepare(sampling: str, count: int = 200, duration: float = 20.0, seed: int = 0) -> Split:
    task = make_task("frequency", {"sampling": sampling, "duration": duration, "train_size": count, "valid_size": 2})
    return task.prepare(None, seed)["train"]


def test_labels_follow_the_band_rule_and_are_balanced() -> None:
    split = prepare("regular", count=401)
    period = split["period"]
    expected = ((period >= 5.0) & (period <= 6.0)).long()
    assert torch.equal(split["target"], expected)
    assert int(split["target"].sum()) == 200  # half (rounded down) in the band
    assert 1.0 <= float(period.min()) and float(period.max()) <= 100.0
    outside = period[split["target"] == 0]
    assert (outside < 5.0).any() and (outside > 6.0).any()  # both sides of the band are drawn


def test_inputs_are_a_sine_of_the_stored_period_at_the_timestamps() -> None:
    split = prepare("async", count=50)
    x, times = split["x"].squeeze(-1).double(), split["times"].double()  # (N, T)
    omega = 2 * math.pi / split["period"].double().unsqueeze(1)  # (N, 1)
    # Recover the phase from the sample nearest zero (where arcsin is well conditioned); one of the
    # two solutions of sin(ωt + φ) = x there must reproduce every other sample.
    ref = x.abs().argmin(dim=1, keepdim=True)
    angle, t0 = torch.asin(x.gather(1, ref)), times.gather(1, ref)
    errors = [
        (torch.sin(omega * times + phase) - x).abs().amax(dim=1)
        for phase in (angle - omega * t0, math.pi - angle - omega * t0)
    ]
    assert float(torch.minimum(*errors).max()) < 1e-4


@pytest.mark.parametrize(("sampling", "steps", "step_ms"), [("regular", 20, 1.0), ("high_res", 200, 0.1)])
def test_regular_grids(sampling: str, steps: int, step_ms: float) -> None:
    split = prepare(sampling)
    assert split["x"].shape == (200, steps, 1)
    expected = torch.arange(steps, dtype=torch.float32) * step_ms
    torch.testing.assert_close(split["times"], expected.expand(200, steps))


def test_async_times_are_sorted_within_the_duration() -> None:
    split = prepare("async")
    times = split["times"]
    assert times.shape == (200, 20)
    assert (times[:, 1:] >= times[:, :-1]).all()
    assert 0.0 <= float(times.min()) and float(times.max()) <= 20.0
    assert not torch.equal(times[0], times[1])  # each example has its own timestamps


def test_spec_reads_times_and_scores_against_chance() -> None:
    task = make_task("frequency", {"train_size": 4, "valid_size": 2, "duration": 5.0})
    spec = task.spec(task.prepare(None, 0))
    assert spec.uses_times and spec.output_size == 2 and spec.baseline_loss == pytest.approx(math.log(2))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sampling": "sparse"}, r"'sampling' must be one of 'regular', 'high_res', 'async', got 'sparse'"),
        ({"duration": 1.5}, r"'duration' must be >= 2 .*got 1\.5"),
        ({"train_size": 1}, r"'train_size' must be >= 2 .*got 1"),
        ({"duration": "50"}, r"frequency option 'duration' must be of type float, got '50'"),
    ],
)
def test_bad_frequency_options_name_the_value(options: dict, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        make_task("frequency", options)
