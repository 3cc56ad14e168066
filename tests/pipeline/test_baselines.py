"""The feed-forward baselines of the unfolded-LSTM study: ``cell: mlp`` and ``cell: cnn`` on
mnist_vector only, built, checked, trained, evaluated, rebuilt and exported like any model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from rnnzoo.pipeline import config, files, onnx_export, runtime
from rnnzoo.pipeline.baselines import CNN, MLP
from rnnzoo.pipeline.model import VectorModel, build_model
from rnnzoo.pipeline.model_record import ModelRecord
from rnnzoo.pipeline.objectives import loss
from rnnzoo.pipeline.stages.evaluate import evaluate
from rnnzoo.pipeline.stages.prepare import prepare
from rnnzoo.pipeline.stages.train import train
from rnnzoo.pipeline.tasks import Batch, TaskSpec
from tests.pipeline.conftest import tiny_params, write_params

DIGITS = TaskSpec(input_size=64, output_size=10, head="vector_classification", baseline_loss=2.3, baseline="", loss_name="cross_entropy")


def test_mlp_has_num_layers_dense_layers_of_the_hidden_width() -> None:
    model = build_model("mlp", DIGITS, 12, num_layers=4, activation="tanh", dropout=0.1)
    assert isinstance(model, VectorModel) and isinstance(model.network, MLP)
    assert len(model.network.layers) == 4
    assert [layer.linear.weight.shape for layer in model.network.layers] == [(12, 64), (12, 12), (12, 12), (12, 12)]
    x = torch.rand(5, 64)
    h, state = model.network(x)
    assert h.shape == (5, 12) and state is None
    assert model(Batch(x, x))[0].shape == (5, 10)
    assert len(build_model("mlp", DIGITS, 12).network.layers) == 10  # the default depth


@pytest.mark.parametrize(("input_size", "num_layers", "flat"), [(64, 2, 2 * 2), (784, 2, 7 * 7), (196, 3, 2 * 2), (49, 4, 1)])
def test_cnn_reads_the_square_image_and_halves_it_per_block(input_size: int, num_layers: int, flat: int) -> None:
    spec = dataclasses.replace(DIGITS, input_size=input_size)
    model = build_model("cnn", spec, 16, channels=3, num_layers=num_layers)
    assert isinstance(model.network, CNN) and len(model.network.layers) == num_layers + 1  # blocks, then the dense layer
    assert model.network.layers[-1].linear.weight.shape == (16, 3 * flat)
    assert model.network.layers[0].linear.weight.shape == (3, 9)  # the 3x3 kernels, as plotted filters
    x = torch.rand(4, input_size)
    h, state = model.network(x)
    assert h.shape == (4, 16) and state is None and model(Batch(x, x))[0].shape == (4, 10)


def test_cnn_sees_rows_as_rows() -> None:
    model = build_model("cnn", DIGITS, 4, channels=1, num_layers=1).eval()
    seen = []
    model.network.layers[0].register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.no_grad():
        model.network.layers[0].conv.weight.zero_()
        model.network.layers[0].conv.weight[0, 0, 1, 1] = 1.0  # identity kernel: the block max-pools the image
        model.network.layers[0].conv.bias.zero_()
        x = torch.zeros(1, 64)
        x[0, 8 * 3 + 5] = 1.0  # row 3, column 5 of the 8x8 image
        model.network(x)
    (pooled,) = seen  # (1, 1, 4, 4): fresh batch norm in eval is the identity (to its eps)
    assert pooled[0, 0, 1, 2] > 0.99 and (pooled[0, 0] == 0).sum() == 15  # the pixel's 2x2 cell, nothing else


def test_bad_baseline_options_are_named() -> None:
    with pytest.raises(ValueError, match="cnn reads square images: input_size 10 is not a square"):
        build_model("cnn", dataclasses.replace(DIGITS, input_size=10), 4)
    with pytest.raises(ValueError, match=r"activation must be one of 'relu', 'tanh', got 'gelu'"):
        build_model("mlp", DIGITS, 4, activation="gelu")
    with pytest.raises(ValueError, match=r"unknown option depth; allowed for cell 'mlp': num_layers"):
        build_model("mlp", DIGITS, 4, depth=3)


def test_gradient_norms_exist_for_every_mlp_layer() -> None:
    model = build_model("mlp", DIGITS, 8, num_layers=5)
    x, target = torch.rand(6, 64), torch.arange(6)
    batch = Batch(x, target)
    loss(DIGITS, model(batch)[0], batch).backward()
    norms = model.layer_gradient_norms()
    assert len(norms) == 5 and all(norm > 0 for norm in norms)
    cnn = build_model("cnn", DIGITS, 8, channels=2)
    loss(DIGITS, cnn(batch)[0], batch).backward()
    assert len(cnn.layer_gradient_norms()) == 3 and all(norm > 0 for norm in cnn.layer_gradient_norms())


def _params(cell: str, task: str, cell_options: dict) -> dict:
    params = tiny_params()
    params["experiments"] = {"base": {
        "cell": cell, "task": task, "hidden_size": 8, "cell_options": cell_options, "task_options": {}, "model_options": {}, "train": {},
    }}
    return params


@pytest.mark.parametrize("cell", ["mlp", "cnn"])
@pytest.mark.parametrize("task", ["adding", "seq_mnist", "ptb"])
def test_a_baseline_on_a_sequence_task_is_refused_naming_the_vector_task(cell: str, task: str) -> None:
    with pytest.raises(config.ConfigError, match=rf"cell '{cell}' is a feed-forward baseline .*allowed tasks: mnist_vector, got task '{task}'"):
        config.parse(_params(cell, task, {}))


@pytest.mark.parametrize(("cell_options", "message"), [
    ({"num_layer": 3}, r"unknown key experiments.base.cell_options.num_layer \(did you mean num_layers\?\); allowed for cell mlp"),
    ({"num_layers": "ten"}, r"params: experiments.base.cell_options.num_layers must be a positive integer, got 'ten'$"),
    ({"num_layers": "1e1"}, r"params: experiments.base.cell_options.num_layers must be an integer \(write 10\), got '1e1'$"),
    ({"batch_norm": "yes"}, r"params: experiments.base.cell_options.batch_norm must be true or false, got 'yes'$"),
    ({"dropout": 1.0}, r"params: experiments.base.cell_options.dropout must be a number in \[0, 1\) \(a rate of 1 drops everything\), got 1.0$"),
])
def test_bad_mlp_options_are_named_in_params(cell_options: dict, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.parse(_params("mlp", "mnist_vector", cell_options))


def test_good_baseline_params_load() -> None:
    config.parse(_params("mlp", "mnist_vector", {"num_layers": 3, "dropout": "1e-1"}))
    config.parse(_params("cnn", "mnist_vector", {"channels": 4, "num_layers": 5}))
    with pytest.raises(config.ConfigError, match=r"params: experiments.base.cell_options.channels must be a positive integer, got 0$"):
        config.parse(_params("cnn", "mnist_vector", {"channels": 0}))


@pytest.mark.parametrize(("cell", "options"), [("mlp", {"num_layers": 3}), ("cnn", {"channels": 4})])
def test_a_model_record_rebuilds_the_model_and_onnx_exports_it(cell: str, options: dict, tmp_path: Path) -> None:
    model = build_model(cell, DIGITS, 6, **options)
    model.train()
    model(Batch(torch.rand(8, 64), None))  # batch-norm statistics move off their initial values
    record = ModelRecord(model.state_dict(), cell, 6, options, {}, DIGITS, params_hash="abc")
    rebuilt = ModelRecord.from_dict(record.to_dict()).build()  # through what the file holds
    x = torch.rand(5, 64)
    with torch.no_grad():
        expected = model.eval()(Batch(x, x))[0]
        torch.testing.assert_close(rebuilt(Batch(x, x))[0], expected, rtol=0, atol=0)
    path = onnx_export.export_graph(onnx_export.exportable(record, "vector"), "vector", tmp_path / "vector.onnx", {"cell": cell})
    session = runtime.open_session(path, runtime.CPU)
    (output,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(output), expected, rtol=1e-5, atol=1e-5)


def test_prepare_train_evaluate_for_both_baselines_on_the_digits(workdir: Path) -> None:
    params = tiny_params()
    common = {"task": "mnist_vector", "hidden_size": 8, "task_options": {"limit": 64}, "model_options": {}, "train": {}}
    params["experiments"] = {
        "vec-mlp": {"cell": "mlp", "cell_options": {"num_layers": 3}, **common},
        "vec-cnn": {"cell": "cnn", "cell_options": {"channels": 4}, **common},
    }
    loaded = config.load(write_params(workdir / "params.yaml", params))
    for name, layers in (("vec-mlp", 3), ("vec-cnn", 3)):
        prepare(loaded, name)
        train(loaded, name, progress=False)
        metrics = evaluate(loaded, name)
        assert 0.0 <= metrics["valid.accuracy"] <= 1.0 and 0.0 <= metrics["test.accuracy"] <= 1.0
        history = json.loads((files.reports_dir(name) / "train_history.json").read_text())
        assert all(len(record["layer_grad_norms"]) == layers for record in history)
        plots = {p.name for p in (files.reports_dir(name) / "plots").glob("*.png")}
        assert {"layer_gradient_norms.png", "first_layer_filters.png"} <= plots
        record = ModelRecord.load(name, loaded.experiment(name).params_hash())
        assert isinstance(record.build(), VectorModel)
