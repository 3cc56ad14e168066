"""``models/<experiment>/model.pt``: the trained weights and how to rebuild the model around them.

One typed record, written by train and read by evaluate, export and bench. On disk it is a plain
dict of tensors and builtins, so ``torch.load(..., weights_only=True)`` reads it without running
code; ``files.load_torch`` refuses a file that is not one (``files.MODEL_KEYS``: this class's
fields without defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from rnnzoo.pipeline import files
from rnnzoo.pipeline.model import SequenceModel, VectorModel, build_model, is_sequence_cell
from rnnzoo.pipeline.tasks.base import TaskSpec

if TYPE_CHECKING:
    from rnnzoo.pipeline.config import ExperimentConfig


@dataclass(frozen=True)
class ModelRecord:
    state_dict: dict[str, Tensor]
    cell: str
    hidden_size: int
    cell_options: dict[str, Any]
    model_options: dict[str, Any]
    spec: TaskSpec
    params_hash: str  # of the experiment's params when trained: later stages refuse another
    task: str = ""
    task_options: dict[str, Any] = field(default_factory=dict)
    selected_step: int | None = None  # with train.eval_every: the step of the weights kept (best on valid)
    selected_on: str | None = None  # and the metric that chose them, e.g. "valid.accuracy"

    @classmethod
    def of(cls, exp: ExperimentConfig, spec: TaskSpec, model: nn.Module) -> ModelRecord:
        """The record of ``model`` (its weights as they are now) trained for ``exp`` on a task of ``spec``."""
        return cls(
            state_dict=model.state_dict(), cell=exp.cell, hidden_size=exp.hidden_size, cell_options=exp.cell_options,
            model_options=exp.model_options, spec=spec, params_hash=exp.params_hash(), task=exp.task, task_options=exp.task_options,
        )

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> ModelRecord:
        """From what ``to_dict`` wrote (a file ``files.load_torch`` has checked)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{key: value for key, value in saved.items() if key in known}, "spec": TaskSpec(**saved["spec"])})

    @classmethod
    def load(cls, experiment: str, params_hash: str) -> ModelRecord:
        """The experiment's trained model, refused if it was trained with other params than ``params_hash``.

        Stages after train label what they write (metrics, ONNX metadata, MLflow runs) with the
        current params: a model trained under other params would be mislabelled. Raises
        ``FileNotFoundError`` without the file, ``ValueError`` for a file that is not a model
        record (naming the command that remakes it) or for other params.
        """
        path = files.model_path(experiment)
        record = cls.from_dict(files.load_torch(path, "model", f"rnnzoo train {experiment}"))
        if record.params_hash != params_hash:
            raise ValueError(
                f"{path} was trained with other params (hash {files.cut(str(record.params_hash))}, now {params_hash}): "
                f"run `rnnzoo train {experiment}` first"
            )
        return record

    def to_dict(self) -> dict[str, Any]:
        """What ``files.save_torch`` writes: builtins and tensors only (the spec as a dict); unset selections left out."""
        saved = {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "spec": dataclasses.asdict(self.spec)}
        return {key: value for key, value in saved.items() if value is not None}

    def with_weights(self, state_dict: dict[str, Tensor], selected_step: int, selected_on: str) -> ModelRecord:
        """This record holding other weights: those selected at ``selected_step`` on ``selected_on``."""
        return dataclasses.replace(self, state_dict=state_dict, selected_step=selected_step, selected_on=selected_on)

    def build(self, time_loop: str = "python", fused: bool = True) -> SequenceModel | VectorModel:
        """The model with these weights, in eval mode; export asks for ``time_loop="scan"`` or ``fused=False``."""
        options = dict(self.cell_options)
        if is_sequence_cell(self.cell):
            options.update(time_loop=time_loop, fused=fused)
        model = build_model(self.cell, self.spec, self.hidden_size, **options, **self.model_options)
        model.load_state_dict(self.state_dict)
        return model.eval()
