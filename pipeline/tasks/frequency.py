"""Frequency discrimination (Neil, Pfeiffer & Liu, "Phased LSTM", NIPS 2016, task 1).

Each example is a sine wave ``sin(2π t / P + φ)`` with a random phase ``φ ~ U(0, 2π)``; class 1
when the period ``P`` lies in ``[5, 6]`` ms, class 0 otherwise. As in the paper, classes are
balanced: half the periods are drawn in the band, half outside it, each log-uniform over its
part of ``[1, 100]`` ms. The wave is sampled over ``duration`` ms in one of three ways:

    regular   every 1 ms                                  duration steps
    high_res  every 0.1 ms                                10 x duration steps
    async     sorted uniform times over the duration      duration steps

``times`` holds each sample's timestamp in ms ``(N, T)``: the Phased LSTM's time gate reads it,
other cells ignore it. With ``time_feature: true`` the timestamp is also appended to each step's
input, x ``(N, T, 2)`` = (sample, time in ms): the paper's LSTM baseline gets the time that way,
so that it receives what the Phased LSTM's gate reads. The periods are kept in the split
(``period``, ``(N,)``) for inspection. Train, valid and test (``test_size``) are drawn in that
order from one seeded generator.
Baseline: classes are balanced, so a memoryless predictor scores cross-entropy log 2, accuracy 1/2.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from torch import Tensor

from rnnzoo.cells.checks import one_of
from rnnzoo.pipeline.tasks.base import Split, Splits, Task, TaskSpec, drawn_splits, require_option

SAMPLINGS = ("regular", "high_res", "async")
STEP_MS = {"regular": 1.0, "high_res": 0.1, "async": 1.0}  # async: the regular count, at random times
PERIOD_MS = (1.0, 100.0)  # all periods
BAND_MS = (5.0, 6.0)  # class 1


@dataclasses.dataclass(frozen=True)
class FrequencyOptions:
    sampling: str = "regular"
    duration: float = 50.0  # ms of signal per example
    train_size: int = 5_000
    valid_size: int = 1_000
    test_size: int = 1_000  # held out to report on; drawn after train and valid, which stay as before
    time_feature: bool = False  # append each step's timestamp (ms) to its input: x (N, T, 2)

    def __post_init__(self) -> None:
        require_option(self.sampling in SAMPLINGS, "frequency", "sampling", self.sampling, one_of(SAMPLINGS))
        require_option(self.duration >= 2, "frequency", "duration", self.duration, ">= 2 (ms: two samples)")
        for key in ("train_size", "valid_size", "test_size"):
            require_option(getattr(self, key) >= 2, "frequency", key, getattr(self, key), ">= 2 (one per class)")


def in_band(period: Tensor) -> Tensor:
    """The class of each period ``(N,)``: 1 inside ``[5, 6]`` ms, else 0."""
    return ((period >= BAND_MS[0]) & (period <= BAND_MS[1])).long()


def draw_periods(count: int, generator: torch.Generator) -> Tensor:
    """``count`` periods in ms, half log-uniform in the band and half log-uniform outside it, shuffled."""
    low, high = math.log(PERIOD_MS[0]), math.log(PERIOD_MS[1])
    band_low, band_high = math.log(BAND_MS[0]), math.log(BAND_MS[1])
    inside = count // 2
    u = torch.rand(count, generator=generator, dtype=torch.float64)
    log_in = band_low + u[:inside] * (band_high - band_low)
    # Outside: one uniform draw over the two pieces' total log-width, the upper piece shifted past the band.
    below, above = band_low - low, high - band_high
    position = u[inside:] * (below + above)
    log_out = torch.where(position < below, low + position, band_high + (position - below))
    periods = torch.cat([log_in, log_out]).exp()
    return periods[torch.randperm(count, generator=generator)]


def sample_times(count: int, sampling: str, duration: float, generator: torch.Generator) -> Tensor:
    """Timestamps in ms ``(N, T)``, increasing along T."""
    steps = round(duration / STEP_MS[sampling])
    if sampling == "async":
        return (torch.rand(count, steps, generator=generator, dtype=torch.float64) * duration).sort(dim=1).values
    grid = torch.arange(steps, dtype=torch.float64) * STEP_MS[sampling]
    return grid.expand(count, steps)


def frequency_examples(count: int, options: FrequencyOptions, generator: torch.Generator) -> Split:
    """x ``(N, T, 1)`` sine samples (``(N, T, 2)``: sample, time in ms, with ``time_feature``),
    target ``(N,)`` long, times ``(N, T)`` ms, period ``(N,)`` ms; all float32 but the target."""
    period = draw_periods(count, generator).float()  # rounded once: labels and waves follow the stored value
    phase = torch.rand(count, 1, generator=generator, dtype=torch.float64) * 2 * math.pi  # (N, 1)
    times = sample_times(count, options.sampling, options.duration, generator)
    values = torch.sin(2 * math.pi * times / period.double().unsqueeze(1) + phase)  # (N, T), float64 phases
    times = times.float().contiguous()
    features = [values.float(), times] if options.time_feature else [values.float()]
    # The feature is the very tensor saved as `times`: the LSTM reads what the time gate reads.
    return {"x": torch.stack(features, dim=-1), "target": in_band(period), "times": times, "period": period}


class FrequencyTask(Task):
    name = "frequency"
    head = "last_classification"
    Options = FrequencyOptions

    def prepare(self, data_dir: Path | None, seed: int) -> Splits:
        return drawn_splits(
            seed, self.options.train_size, self.options.valid_size, self.options.test_size,
            lambda count, generator: frequency_examples(count, self.options, generator),
        )

    def spec(self, splits: Splits) -> TaskSpec:
        return TaskSpec(
            input_size=2 if self.options.time_feature else 1, output_size=2, head=self.head, baseline_loss=math.log(2.0),
            baseline="memoryless on balanced classes: cross-entropy log 2, accuracy 1/2",
            loss_name="cross_entropy", uses_times=True, steps=int(splits["train"]["x"].shape[1]),
        )
