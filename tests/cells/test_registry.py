"""The registry: cells.names(), cells.options(), cells.is_sequence_model() and cells.make()."""

from __future__ import annotations

import math
import re

import pytest
import torch

from rnnzoo import cells
from rnnzoo.cells.layer import RecurrentLayer

SEQUENCE_CELLS = ("lstm", "janet", "chrono_lstm", "indrnn", "phased_lstm", "rhn")
VECTOR_MODELS = ("unfolded_lstm",)
ALL_CELLS = SEQUENCE_CELLS + VECTOR_MODELS
REQUIRED = {"chrono_lstm": {"max_timescale": 10}}
LAYER_OPTIONS = ("num_layers", "dropout", "bidirectional", "batch_first", "fused")


def build(name: str, input_size: int = 3, hidden_size: int = 5, **options):
    return cells.make(name, input_size=input_size, hidden_size=hidden_size, **{**REQUIRED.get(name, {}), **options})


def test_names_lists_every_cell():
    names = cells.names()
    assert set(ALL_CELLS) <= set(names)
    assert names == sorted(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", ALL_CELLS)
def test_is_sequence_model(name):
    assert cells.is_sequence_model(name) is (name in SEQUENCE_CELLS)


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_sequence_cell_options_include_layer_options(name):
    options = cells.options(name)
    assert set(LAYER_OPTIONS) <= set(options)
    assert "input_size" not in options and "hidden_size" not in options


@pytest.mark.parametrize(
    "name, expected",
    [
        ("chrono_lstm", {"max_timescale"}),
        ("janet", {"shift", "max_timescale"}),
        ("indrnn", {"activation", "sequence_length", "recurrent_max_abs", "last_layer_init"}),
        ("rhn", {"depth", "transform_bias", "input_dropout", "state_dropout"}),
        ("phased_lstm", {"ratio_on", "leak"}),
        ("unfolded_lstm", {"depth", "tied", "batch_norm", "dropout"}),
    ],
)
def test_cell_options_listed(name, expected):
    assert expected <= set(cells.options(name))


def test_unfolded_lstm_options_have_no_layer_options():
    options = cells.options("unfolded_lstm")
    assert not {"num_layers", "bidirectional", "batch_first", "fused"} & set(options)


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_make_builds_a_recurrent_layer(name):
    layer = build(name)
    assert isinstance(layer, RecurrentLayer)
    assert layer.cell_type is cells.SEQUENCE_CELLS[name]
    assert (layer.input_size, layer.hidden_size, layer.num_layers, layer.batch_first) == (3, 5, 1, True)
    assert layer.fused is True


def test_make_unfolded_lstm_builds_the_vector_model():
    model = build("unfolded_lstm", depth=3)
    assert isinstance(model, cells.UnfoldedLSTM)
    assert len(model.layers) == 3


def test_make_passes_cell_and_layer_options_through():
    assert build("rhn", depth=2).cells[0].depth == 2
    assert build("janet", shift=0.5).cells[0].shift == 0.5
    assert build("indrnn", activation="tanh").cells[0].activation == "tanh"
    assert build("chrono_lstm", max_timescale=7).cells[0].max_timescale == 7
    layer = build("lstm", num_layers=3, bidirectional=True, dropout=0.25, batch_first=False, fused=False)
    assert (layer.num_layers, layer.bidirectional, layer.dropout, layer.batch_first, layer.fused) == (3, True, 0.25, False, False)
    assert len(layer.cells) == 6


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [cells.make, cells.options, cells.is_sequence_model], ids=["make", "options", "is_sequence_model"])
def test_unknown_name_raises_naming_it_and_the_allowed_names(call):
    args = ("gru_plus_plus", 3, 5) if call is cells.make else ("gru_plus_plus",)
    with pytest.raises(ValueError) as error:
        call(*args)
    message = str(error.value)
    assert "gru_plus_plus" in message
    for name in ALL_CELLS:
        assert name in message, f"{name!r} missing from: {message}"


@pytest.mark.parametrize("name", ALL_CELLS)
def test_unknown_option_raises_naming_it_and_the_allowed_options(name):
    with pytest.raises(ValueError) as error:
        build(name, hiden_size=4)
    message = str(error.value)
    assert "hiden_size" in message
    for option in cells.options(name):
        assert option in message, f"{option!r} missing from: {message}"


def test_option_of_another_cell_is_unknown():
    with pytest.raises(ValueError, match="unknown option depth; allowed for cell 'lstm'"):
        build("lstm", depth=2)
    with pytest.raises(ValueError, match="unknown option num_layers; allowed for cell 'unfolded_lstm'"):
        build("unfolded_lstm", num_layers=2)


def test_chrono_lstm_without_max_timescale_raises_value_error():
    with pytest.raises(ValueError, match="max_timescale"):
        cells.make("chrono_lstm", input_size=3, hidden_size=5)


@pytest.mark.parametrize(
    "name, options",
    [
        ("lstm", {"num_layers": 0}),
        ("lstm", {"num_layers": -1}),
        ("lstm", {"num_layers": 2.0}),
        ("lstm", {"dropout": 1.5}),
        ("lstm", {"dropout": -0.1}),
        ("lstm", {"dropout": 1.0}),
        ("janet", {"dropout": float("nan")}),
        ("lstm", {"hidden_size": 0}),
        ("lstm", {"input_size": -3}),
        ("janet", {"hidden_size": 0}),
        ("unfolded_lstm", {"hidden_size": 0}),
        ("unfolded_lstm", {"input_size": -3}),
        ("unfolded_lstm", {"depth": 0}),
        ("unfolded_lstm", {"dropout": 1.5}),
        ("rhn", {"depth": 0}),
        ("rhn", {"input_dropout": 1.0}),
        ("indrnn", {"activation": "sigmoid"}),
        ("indrnn", {"sequence_length": 0}),
        ("janet", {"shift": float("nan")}),
        ("chrono_lstm", {"max_timescale": 2}),
        ("phased_lstm", {"ratio_on": 0.0}),
        ("phased_lstm", {"leak": 2.0}),
    ],
    ids=lambda value: None if not isinstance(value, dict) else ",".join(f"{k}={v!r}" for k, v in value.items()),
)
def test_invalid_option_value_raises_showing_it(name, options):
    with pytest.raises(ValueError) as error:
        build(name, **options)
    message = str(error.value)
    ((option, value),) = options.items()
    assert option in message, f"the option {option!r} is not named in: {message}"
    # The bad value itself, as a token of its own (so "0" is not found inside "0.5").
    shown = "nan" if isinstance(value, float) and math.isnan(value) else re.escape(repr(value))
    assert re.search(rf"(?<![\w.]){shown}(?![\w.])", message, flags=re.IGNORECASE), f"the value {value!r} is not shown in: {message}"


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_layer_rejects_unknown_cell_option_directly(name):
    with pytest.raises(ValueError, match="unknown option"):
        RecurrentLayer(cells.SEQUENCE_CELLS[name], 3, 5, colour="blue")


# --- every cell builds and runs ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_CELLS)
def test_every_cell_has_parameters_and_runs_at_hidden_8(name):
    model = build(name, input_size=3, hidden_size=8)
    count = sum(p.numel() for p in model.parameters())
    assert count > 0
    assert all(p.requires_grad for p in model.parameters())
    if cells.is_sequence_model(name):
        outputs, state = model(torch.randn(2, 5, 3))
        assert outputs.shape == (2, 5, 8)
        assert all(field.shape == (1, 2, 8) for field in state)
    else:
        outputs, state = model(torch.randn(2, 3))
        assert outputs.shape == (2, 8)
    assert torch.isfinite(outputs).all()
    outputs.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", SEQUENCE_CELLS)
def test_parameter_count_scales_with_layers_and_directions(name):
    one = sum(p.numel() for p in build(name, hidden_size=8).parameters())
    # A second direction doubles the count; the second layer's cells read 8 (or 16) features.
    assert sum(p.numel() for p in build(name, hidden_size=8, bidirectional=True).parameters()) == 2 * one
    assert sum(p.numel() for p in build(name, hidden_size=8, num_layers=2).parameters()) > one


def test_unfolded_lstm_rejects_sequences():
    model = build("unfolded_lstm")
    with pytest.raises(ValueError, match="classifies vectors"):
        model(torch.randn(2, 4, 3))


def test_makes_docstring_names_every_cell_and_every_layer_option():
    # help(cells.make) is where a user looks first: a new cell or option must appear there.
    doc = cells.make.__doc__
    assert all(f"``{name}``" in doc for name in cells.names())
    assert all(f"``{option}``" in doc for option in cells.LAYER_OPTIONS)
    assert "Raises:" in doc and "ValueError" in doc
