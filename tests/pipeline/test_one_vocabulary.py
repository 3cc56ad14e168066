"""Every option rnnzoo reads is refused in the same words (cells.checks): a cell's option given to
cells.make, the same option in params.yaml (named by its key path), a params key of its own, a
task's option; and an unknown name the same way in each place."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from rnnzoo import cells
from rnnzoo.cells.checks import InvalidValue
from rnnzoo.pipeline import baselines, config
from rnnzoo.pipeline.tasks import make_task
from tests.pipeline.conftest import tiny_params


def _params(**experiment: object) -> dict:
    params = tiny_params()
    base = {"cell": "phased_lstm", "task": "adding", "hidden_size": 8, "cell_options": {}, "task_options": {}, "model_options": {}, "train": {}}
    params["experiments"] = {"base": {**base, **experiment}}
    return params


REFUSED: dict[str, tuple[Callable[[], object], str]] = {
    # place: (what is refused, the name the message must give)
    "cell option": (lambda: cells.make("phased_lstm", 1, 4, ratio_on=2.0), "ratio_on"),
    "baseline option": (lambda: baselines.make("mlp", 4, 4, dropout=1.0), "dropout"),
    "cell option in params": (lambda: config.parse(_params(cell_options={"ratio_on": 2.0})), "params: experiments.base.cell_options.ratio_on"),
    "params key": (lambda: config.parse(_params(hidden_size=0)), "params: experiments.base.hidden_size"),
    "train key": (lambda: config.parse({**_params(), "train": {**tiny_params()["train"], "lr": -1}}), "params: train.lr"),
    "task option": (lambda: make_task("adding", {"length": 1}), "adding option 'length'"),
    "task option in params": (lambda: config.parse(_params(task_options={"length": 1})), "params: experiments.base.task_options.length"),
    # The refused option by its own name, not by the first option the message happens to mention,
    # and a default the user never wrote (log_period_high's 6 against log_period_low 7).
    "task option beside the one it names": (
        lambda: config.parse(_params(cell="lstm", task="ptb", task_options={"source": "embedded", "train_file": "x.txt"})),
        "params: experiments.base.task_options.train_file",
    ),
    "task option refused for another's value": (
        lambda: config.parse(_params(cell="lstm", task="seq_mnist", task_options={"mode": "row", "permuted": True})),
        "params: experiments.base.task_options.permuted",
    ),
    "cell option left at its default": (
        lambda: config.parse(_params(cell_options={"log_period_low": 7.0})), "params: experiments.base.cell_options.log_period_high",
    ),
}


@pytest.mark.parametrize("place", sorted(REFUSED))
def test_a_bad_value_is_refused_in_one_form_everywhere(place: str) -> None:
    refuse, name = REFUSED[place]
    with pytest.raises(InvalidValue) as caught:
        refuse()
    assert caught.value.name == name
    assert re.fullmatch(rf"{re.escape(name)} must be .+, got .+", str(caught.value)), str(caught.value)


UNKNOWN: dict[str, tuple[Callable[[], object], str]] = {
    "cell": (lambda: cells.make("rhn", 1, 4, depht=2), "unknown option depht (did you mean depth?); allowed for cell 'rhn': "),
    "layer": (lambda: cells.RecurrentLayer(cells.SEQUENCE_CELLS["rhn"], 1, 4, depht=2), "unknown option depht (did you mean depth?); allowed for RHNCell: "),
    "baseline": (lambda: baselines.make("mlp", 4, 4, dropuot=0.1), "unknown option dropuot (did you mean dropout?); allowed for cell 'mlp': "),
    "task": (lambda: make_task("adding", {"lenght": 3}), "unknown option lenght (did you mean length?); allowed for task 'adding': "),
    "params": (lambda: config.parse(_params(cell_options={"ratio_onn": 0.1})), "params: unknown key experiments.base.cell_options.ratio_onn (did you mean ratio_on?); allowed for cell phased_lstm: "),
}


@pytest.mark.parametrize("place", sorted(UNKNOWN))
def test_an_unknown_name_is_refused_in_one_form_everywhere(place: str) -> None:
    refuse, start = UNKNOWN[place]
    with pytest.raises(ValueError) as caught:
        refuse()
    assert str(caught.value).startswith(start), str(caught.value)
