"""Task heads on top of a layer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rnnzoo import cells
from rnnzoo.pipeline import baselines, files
from rnnzoo.pipeline.model import SequenceModel, build_model, is_sequence_cell
from rnnzoo.pipeline.model_record import ModelRecord
from rnnzoo.pipeline.tasks import Batch, TaskSpec

CLASSIFY = TaskSpec(input_size=3, output_size=4, head="last_classification", baseline_loss=1.0, baseline="", loss_name="cross_entropy")


def test_bidirectional_last_step_head_reads_forward_end_and_backward_start() -> None:
    torch.manual_seed(0)
    model = SequenceModel("janet", CLASSIFY, 5, bidirectional=True).eval()
    x, lengths = torch.randn(2, 6, 3), torch.tensor([6, 3])
    outputs, _ = model.layer(x, lengths=lengths)
    forward = outputs[torch.arange(2), lengths - 1, :5]
    backward = outputs[:, 0, 5:]  # the backward direction has read the whole sequence at step 0
    expected = model.decoder(torch.cat([forward, backward], dim=-1))
    torch.testing.assert_close(model(Batch(x, x, lengths))[0], expected)


@pytest.mark.parametrize("head", ["language_model", "step_classification"])
def test_bidirectional_step_heads_are_refused(head: str) -> None:
    spec = TaskSpec(input_size=7, output_size=7, head=head, baseline_loss=1.0, baseline="", loss_name="cross_entropy")
    with pytest.raises(ValueError, match="bidirectional"):
        SequenceModel("lstm", spec, 4, bidirectional=True)


LANGUAGE = TaskSpec(input_size=11, output_size=11, head="language_model", baseline_loss=1.0, baseline="", loss_name="cross_entropy",
                    carries_state=True)


@pytest.mark.parametrize("cell", ["phased_lstm", "janet", "rhn"])
def test_a_language_model_read_in_segments_equals_one_pass(cell: str) -> None:
    # Truncated BPTT and segment-wise evaluation carry the state from one segment to the next:
    # the logits must be those of one pass over the whole stream (the Phased LSTM's timestamps
    # keep counting from the state instead of restarting at 0 every segment).
    torch.manual_seed(0)
    model = SequenceModel(cell, LANGUAGE, 6).eval()
    tokens = torch.randint(0, 11, (2, 10))
    whole, _ = model(Batch(tokens, tokens))
    first, state = model(Batch(tokens[:, :4], tokens[:, :4]))
    second, _ = model(Batch(tokens[:, 4:], tokens[:, 4:]), state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-6)


REGRESS = TaskSpec(input_size=2, output_size=1, head="last_regression", baseline_loss=1.0, baseline="", loss_name="mse")


def test_the_mlflow_module_of_a_timestamped_cell_on_a_task_without_timestamps_numbers_the_steps() -> None:
    from rnnzoo.pipeline.model import PredictionModule

    torch.manual_seed(0)
    model = SequenceModel("phased_lstm", REGRESS, 5).eval()
    module = PredictionModule(model)
    batch = Batch(torch.randn(2, 6, 2), torch.zeros(2, 1))  # no timestamps: the adding task's kind
    packed = module.pack(batch)
    assert packed.shape == (2, 6, 2), "nothing to pack beside the features"
    torch.testing.assert_close(module(packed), model(batch)[0], rtol=0, atol=0)


VECTOR = TaskSpec(input_size=16, output_size=3, head="vector_classification", baseline_loss=1.0, baseline="", loss_name="cross_entropy")  # 4 x 4 images for cnn


@pytest.mark.parametrize("cell", [*cells.names(), *baselines.names()])
def test_what_stages_ask_of_a_model_is_its_own_property(cell: str) -> None:
    # Stages ask the model (is_sequence, graphs, diagnostics), never its class: one decision, by name.
    sequence = is_sequence_cell(cell)
    options = {"depth": 2} if cell == "unfolded_lstm" else {"max_timescale": 10} if cell == "chrono_lstm" else {}
    model = build_model(cell, CLASSIFY if sequence else VECTOR, 4, **options)
    assert model.is_sequence is sequence and isinstance(model, SequenceModel) is sequence
    assert model.graphs == (("sequence", "step") if sequence else ("vector",))
    assert bool(model.diagnostics) is (not sequence)
    if sequence:
        bidirectional = build_model(cell, CLASSIFY, 4, bidirectional=True, **options)
        assert bidirectional.graphs == ("sequence",), "no streaming step graph: the backward direction reads the future"
        assert model.first_layer_weight() is None
    else:
        weight = model.first_layer_weight()
        assert weight.dim() == 2 and weight.shape[1] in (VECTOR.input_size, 9)  # 9: a cnn kernel, 3 x 3


def test_the_model_files_required_keys_are_the_records_fields_without_defaults() -> None:
    required = {f.name for f in dataclasses.fields(ModelRecord) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert set(files.MODEL_KEYS) == required


def test_a_model_record_survives_its_file_and_rebuilds_the_same_model(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("janet", CLASSIFY, 5).eval()
    record = ModelRecord(model.state_dict(), "janet", 5, {}, {}, CLASSIFY, params_hash="abc").with_weights(model.state_dict(), 7, "valid.accuracy")
    files.save_torch(record.to_dict(), tmp_path / "model.pt")
    loaded = ModelRecord.from_dict(files.load_torch(tmp_path / "model.pt", "model", "rnnzoo train x"))
    assert (loaded.cell, loaded.spec, loaded.selected_step, loaded.selected_on) == ("janet", CLASSIFY, 7, "valid.accuracy")
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(loaded.build()(Batch(x, x))[0], model(Batch(x, x))[0])
    unselected = ModelRecord(model.state_dict(), "janet", 5, {}, {}, CLASSIFY, params_hash="abc").to_dict()
    assert "selected_step" not in unselected, "an unselected model's file holds no selection"
