"""Frequency discrimination's ``time_feature``: each step's timestamp appended to its input, so a
plain LSTM (the Phased LSTM paper's baseline) reads what the Phased LSTM's time gate reads."""

from __future__ import annotations

import pytest
import torch

from rnnzoo.pipeline.model import build_model
from rnnzoo.pipeline.objectives import loss
from rnnzoo.pipeline.tasks import make_task
from rnnzoo.pipeline.tasks.base import TaskError

OPTIONS = {"duration": 12.0, "train_size": 20, "valid_size": 6, "test_size": 6}


@pytest.mark.parametrize("sampling", ["regular", "high_res", "async"])
def test_the_extra_feature_is_the_timestamp_and_the_signal_is_unchanged(sampling: str) -> None:
    plain = make_task("frequency", {**OPTIONS, "sampling": sampling}).prepare(None, 3)
    timed = make_task("frequency", {**OPTIONS, "sampling": sampling, "time_feature": True}).prepare(None, 3)
    for split in ("train", "valid", "test"):
        x, times = timed[split]["x"], timed[split]["times"]
        assert x.shape == (*plain[split]["x"].shape[:2], 2) and x.dtype == torch.float32
        assert torch.equal(x[..., 0:1], plain[split]["x"])  # the sine samples, bit for bit
        assert torch.equal(x[..., 1], times)  # the timestamps in ms, as the time gate reads them
        assert torch.equal(times, plain[split]["times"]) and torch.equal(timed[split]["target"], plain[split]["target"])


def test_spec_input_size_follows_the_option_and_an_lstm_trains_on_it() -> None:
    plain = make_task("frequency", OPTIONS)
    assert plain.spec(plain.prepare(None, 0)).input_size == 1
    task = make_task("frequency", {**OPTIONS, "time_feature": True})
    splits = task.prepare(None, 0)
    spec = task.spec(splits)
    assert spec.input_size == 2 and spec.uses_times
    model = build_model("lstm", spec, hidden_size=4)
    batch = next(task.batches(splits["train"], 5))
    prediction, _ = model(batch)
    loss(spec, prediction, batch).backward()
    weight_ih = model.layer.cells[0].weight_ih  # (4H, I): column 1 reads the timestamp
    assert prediction.shape == (5, 2) and weight_ih.shape[1] == 2 and weight_ih.grad[:, 1].abs().sum() > 0


def test_time_feature_must_be_a_bool() -> None:
    with pytest.raises(TaskError, match=r"frequency option 'time_feature' must be of type bool, got 'yes'"):
        make_task("frequency", {"time_feature": "yes"})
