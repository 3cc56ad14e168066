"""One layer class that runs any cell over a sequence.

``RecurrentLayer(cell_type, input_size, hidden_size, ...)`` stacks ``num_layers`` cells (two a
layer when ``bidirectional``), applies dropout between layers, and handles variable lengths:
outputs past a sequence's end are zero and the final state is the state at its last valid
step. Each cell's input projection runs once over all steps before the time loop; the loop
does only the recurrent part. With ``fused=True`` (the default) each layer direction's whole
loop, forward and backward, is one fused op (``cells.loops``: C++ on the CPU, Triton on CUDA),
and stacks of plain LSTM cells run on ``torch.nn.LSTM``'s kernel (cuDNN on GPU); ``fused=False``
runs the reference Python loop over ``recurrent_step``, which the tests hold the fused loops to.
``time_loop="scan"`` runs the loop under torch's ``scan`` operator instead, for ONNX export.

States go in and come out as the cell's NamedTuple with every field stacked ``(L*D, B, H)``,
index ``layer * D + direction``, as ``torch.nn.LSTM`` does.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn
from torch._higher_order_ops.scan import scan
from torch.nn import functional as F

from rnnzoo.cells import loops
from rnnzoo.cells.base import RecurrentCell, State
from rnnzoo.cells.checks import refuse_unknown, require_bool, require_choice, require_positive_int, require_rate
from rnnzoo.cells.lstm import LSTMCell
from rnnzoo.cells.torch_lstm import flatten_for_cudnn, run_torch_lstm

# "python": a Python loop over steps (eager, fastest to run); "scan": torch's scan operator,
# which export turns into one ONNX Scan node so the graph keeps the time axis dynamic.
TIME_LOOPS = ("python", "scan")


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x`` ``(B, T, ...)`` within its valid length; padding stays put."""
    if lengths is None:
        return x.flip(1)
    steps = torch.arange(x.shape[1], device=x.device)  # (T,)
    index = lengths.unsqueeze(1) - 1 - steps  # (B, T)
    index = torch.where(index >= 0, index, steps)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def _masked_step(
    cell: RecurrentCell, state: State, projected: Tensor, time: Tensor | None, keep: Tensor | None, masks: tuple
) -> tuple[Tensor, State]:
    """One recurrent step; where ``keep`` ``(B, 1)`` is False (past a sequence's end) the state
    stays and the output is zero."""
    h, new_state = cell.recurrent_step(projected, state, time, masks)
    if keep is None:
        return h, new_state
    new_state = type(state)(*(torch.where(keep, new, old) for new, old in zip(new_state, state)))
    return torch.where(keep, h, torch.zeros_like(h)), new_state  # not h * keep: NaN padding * 0 is NaN


def _scan_direction(
    cell: RecurrentCell, projected: Tensor, state: State, times: Tensor | None, valid: Tensor | None, masks: tuple
) -> tuple[Tensor, State]:
    """The time loop as torch's ``scan`` operator: exports to one ONNX ``Scan`` node, T dynamic."""
    state_type = type(state)
    scanned = [t.transpose(0, 1) for t in (projected, times, valid) if t is not None]  # time-major

    def combine(carry: tuple[Tensor, ...], inputs: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], Tensor]:
        rest = iter(inputs[1:])
        time = next(rest) if times is not None else None
        keep = next(rest) if valid is not None else None
        h, new_state = _masked_step(cell, state_type(*carry), inputs[0], time, keep, masks)
        # scan forbids outputs that alias each other or the inputs (JANET's output is its state).
        return tuple(field.clone() for field in new_state), h.clone()

    final, outputs = scan(combine, tuple(state), tuple(scanned))  # outputs (T, B, H)
    return outputs.transpose(0, 1), state_type(*final)


def _fused_direction(
    cell: RecurrentCell, x: Tensor, state: State, times: Tensor | None, valid: Tensor | None, masks: tuple
) -> tuple[Tensor, State]:
    """The time loop as one fused op (``cells.loops``) over ``x`` ``(B, T, I)``: outputs ``(B, T, H)``."""
    if masks:  # per-sequence masks are shaped for the batch-first input (RHN's input dropout)
        projected = cell.project_input(x, masks).transpose(0, 1).contiguous()
    else:  # the projection is a linear map of the last axis: made time-major, nothing is copied
        projected = cell.project_input(x.transpose(0, 1), masks)  # (T, B, G)
    # The loops run in float32 or float64, and in bfloat16 on CUDA (loops.loop_dtype); a half model
    # (or autocast's half projection) runs them in float32. Timestamps come in at least float32
    # (_check_times) and stay so. Outputs and state come back in the dtypes the reference loop
    # gives: the input's and the state's own (float32 under autocast; a half model's half).
    dtype = loops.loop_dtype(projected.dtype, projected.device)
    time_dtype = torch.promote_types(dtype, torch.float32)
    state_dtypes = [field.dtype for field in state]
    # A carried timestamp (the Phased LSTM's state.time) in the timestamps' dtype, the rest in the loop's.
    state = type(state)(*(field.to(time_dtype if name == "time" else dtype).contiguous() for name, field in zip(state._fields, state)))
    outputs, final = cell.fused_loop(
        projected.to(dtype).contiguous(),
        state,
        None if valid is None else valid.squeeze(-1).t().contiguous(),  # (T, B)
        None if times is None else times.to(time_dtype).t().contiguous(),  # (T, B)
        masks,
    )
    return outputs.transpose(0, 1).to(x.dtype), type(final)(*(field.to(kept) for field, kept in zip(final, state_dtypes)))


class RecurrentLayer(nn.Module):
    """Runs ``cell_type`` over sequences: stacked, optionally bidirectional, with variable lengths.

    Args:
        cell_type: a ``RecurrentCell`` subclass (``cells.make(name, ...)`` picks it by name).
        input_size: features per step in (>= 1).
        hidden_size: units per layer (>= 1).
        num_layers: stacked layers (>= 1); ``dropout`` in [0, 1) between them, in training only.
        bidirectional: a second cell per layer reads each sequence backwards (within its length);
            outputs then have ``2 * hidden_size`` features.
        batch_first: inputs and outputs ``(B, T, ...)`` if True, else ``(T, B, ...)``.
        fused: run each layer direction's time loop as one fused op (C++ on the CPU, Triton on
            CUDA; ``torch.nn.LSTM``'s kernel for LSTM stacks) when one exists for the device;
            False runs the reference Python loop. Both give the same results to float precision.
        time_loop: ``"python"`` or ``"scan"`` (torch's scan operator, for ONNX export).
        **cell_options: the cell's own options (``cells.options(name)``).

    Raises ``ValueError`` naming the bad value and what is allowed, for unknown options and
    out-of-range values here, and for wrongly shaped inputs, lengths, times or state in forward.
    Dtypes: float32 and float64; float16 and bfloat16 (a half model, or autocast) too, the fused
    loops then computing in float32 (on CUDA, bfloat16 storage and tensor-core bfloat16 products
    with float32 accumulation: ``loops.loop_dtype``) and handing back the input's dtype.
    """

    def __init__(
        self,
        cell_type: type[RecurrentCell],
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        batch_first: bool = True,
        fused: bool = True,
        time_loop: str = "python",
        **cell_options: Any,
    ) -> None:
        super().__init__()
        refuse_unknown(sorted(cell_options), cell_type.option_names(), whose=f"for {cell_type.__name__}")
        self.cell_type = cell_type
        self.input_size = require_positive_int("input_size", input_size)
        self.hidden_size = require_positive_int("hidden_size", hidden_size)
        self.num_layers = require_positive_int("num_layers", num_layers)
        self.dropout = require_rate("dropout", dropout)
        self.bidirectional = require_bool("bidirectional", bidirectional)
        self.batch_first = require_bool("batch_first", batch_first)
        self.fused = require_bool("fused", fused)
        self.time_loop = require_choice("time_loop", time_loop, TIME_LOOPS)
        self.num_directions = 2 if self.bidirectional else 1
        self.cells = nn.ModuleList(
            cell_type.for_layer(
                input_size if layer == 0 else hidden_size * self.num_directions, hidden_size, layer, num_layers, **cell_options
            )
            for layer in range(num_layers)
            for _ in range(self.num_directions)
        )

    @property
    def state_type(self) -> type[Any]:  # the cell's State NamedTuple class (see RecurrentCell.state_type)
        return self.cell_type.state_type

    @property
    def takes_time(self) -> bool:
        return self.cell_type.takes_time

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.num_directions

    @property
    def runs_on_torch_lstm(self) -> bool:
        """Whether ``forward`` hands the whole stack to ``torch.nn.LSTM``'s kernel."""
        return self.fused and self.time_loop == "python" and getattr(self.cell_type, "runs_on_torch_lstm", False)

    def init_state(self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> State:
        """The zero state of the whole stack, fields ``(L*D, B, H)``."""
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        return self.state_type(*(torch.zeros(shape, device=device, dtype=dtype) for _ in self.state_type._fields))

    def cell(self, index: int) -> RecurrentCell:
        """The cell of layer ``index // D``, direction ``index % D`` (``cells`` is an ``nn.ModuleList``,
        whose items type as ``nn.Module``; every one is built by ``cell_type.for_layer``)."""
        return cast(RecurrentCell, self.cells[index])

    def _lstm_cells(self) -> list[LSTMCell]:
        """The cells of a layer that runs on torch.nn.LSTM's kernel: LSTM cells, every one."""
        return [cast(LSTMCell, cell) for cell in self.cells]

    def _apply(self, fn: Any, recurse: bool = True) -> RecurrentLayer:
        # Like torch.nn.LSTM: after .to(cuda) / .half(), re-pack the weights for cuDNN.
        result = super()._apply(fn, recurse)
        if self.runs_on_torch_lstm:
            flatten_for_cudnn(self._lstm_cells(), self.num_layers, self.bidirectional)
        return result

    def forward(
        self, x: Tensor, state: State | None = None, *, lengths: Tensor | None = None, times: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """Run over ``x``: ``(B, T, I)`` if ``batch_first`` else ``(T, B, I)``.

        ``lengths`` ``(B,)`` gives each sequence's valid steps; ``times`` (cells that take
        timestamps) has ``x``'s layout without the feature axis, and defaults to the step
        indices after the state's (0, 1, ... from a fresh state: see the cell's state). Returns outputs ``(B, T, D*H)`` (or ``(T, B, D*H)``) and the final state.
        """
        x = self._check_input(x)
        batch, steps = x.shape[:2]
        lengths = self._check_lengths(lengths, batch, steps, x.device)
        state = self._check_state(state, batch, x)
        times = self._check_times(times, batch, steps, x, state)
        valid = None
        if lengths is not None:
            # Padding must not matter, even NaN: zero it so no gradient sees it (0 * NaN is NaN).
            valid = torch.arange(steps, device=x.device) < lengths.unsqueeze(1)  # (B, T)
            x = torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
            if times is not None:
                times = torch.where(valid, times, torch.zeros((), dtype=times.dtype, device=times.device))
        if self.training:
            for index in range(len(self.cells)):
                self.cell(index).constrain_parameters_()
        # torch.compile cannot trace torch.nn.LSTM's kernel (dynamo refuses it; inductor mis-lowers
        # mkldnn_rnn_layer): compiled, an LSTM stack runs its cells' fused loop like any other cell.
        # Exporters still get the kernel (run_torch_lstm hands them rnnzoo::lstm_stack).
        compiling = torch.compiler.is_compiling() and not torch.compiler.is_exporting()
        if self.runs_on_torch_lstm and not compiling:
            outputs, final = run_torch_lstm(
                self._lstm_cells(), x, state, lengths, self.num_layers, self.dropout, self.training, self.bidirectional
            )
        else:
            outputs, final = self._run_stack(x, state, lengths, valid, times)
        return (outputs if self.batch_first else outputs.transpose(0, 1)), final

    def _run_stack(
        self, x: Tensor, state: State, lengths: Tensor | None, valid: Tensor | None, times: Tensor | None
    ) -> tuple[Tensor, State]:
        # Reversing within each valid length leaves padding in place, so one mask serves both directions.
        keep = None if valid is None else valid.unsqueeze(-1)  # (B, T, 1)
        finals = []
        layer_input = x
        for layer in range(self.num_layers):
            direction_outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                cell_state = self.state_type(*(field[index] for field in state))
                reverse = direction == 1
                sequence = reverse_padded(layer_input, lengths) if reverse else layer_input
                sequence_times = reverse_padded(times, lengths) if reverse and times is not None else times
                outputs, final = self._run_direction(self.cell(index), sequence, cell_state, keep, sequence_times)
                direction_outputs.append(reverse_padded(outputs, lengths) if reverse else outputs)
                finals.append(final)
            layer_input = torch.cat(direction_outputs, dim=-1)  # (B, T, D*H)
            if layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, self.training)
        stacked = self.state_type(*(torch.stack(fields) for fields in zip(*finals)))
        return layer_input, stacked

    def _run_direction(
        self, cell: RecurrentCell, x: Tensor, state: State, valid: Tensor | None, times: Tensor | None
    ) -> tuple[Tensor, State]:
        batch, steps = x.shape[:2]
        masks = cell.draw_masks(batch, x.device, x.dtype)
        if self.fused and self.time_loop == "python" and cell.has_fused_loop and loops.available(x.device, cell.hidden_size):
            return _fused_direction(cell, x, state, times, valid, masks)
        projected = cell.project_input(x, masks)  # (B, T, G), one matmul for all steps
        if self.time_loop == "scan":
            return _scan_direction(cell, projected, state, times, valid, masks)
        # unbind, not projected[:, t]: each indexed slice's backward writes a zero tensor the size
        # of the whole (B, T, G) projection, which made the backward pass grow with T².
        step_inputs = projected.unbind(1)
        step_times = times.unbind(1) if times is not None else [None] * steps
        step_keeps = valid.unbind(1) if valid is not None else [None] * steps
        outputs = []
        for projected_t, time_t, keep_t in zip(step_inputs, step_times, step_keeps):
            h, state = _masked_step(cell, state, projected_t, time_t, keep_t, masks)
            outputs.append(h)
        return torch.stack(outputs, dim=1), state

    def _check_input(self, x: Tensor) -> Tensor:
        layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
        if x.dim() != 3:
            raise ValueError(f"input must be 3-D {layout}, got shape {tuple(x.shape)}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"input has {x.shape[2]} features, the layer expects input_size={self.input_size}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"input must have at least one sequence and one step, got shape {tuple(x.shape)}")
        return x if self.batch_first else x.transpose(0, 1)

    @staticmethod
    def _check_lengths(lengths: Tensor | None, batch: int, steps: int, device: torch.device) -> Tensor | None:
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths)
        if lengths.shape != (batch,) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise ValueError(f"lengths must be an integer tensor of shape ({batch},), got {lengths.dtype} {tuple(lengths.shape)}")
        # Values can only be checked eagerly: under export they are data, not constants.
        if not torch.compiler.is_compiling() and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
            raise ValueError(f"lengths must be in [1, {steps}] (the sequence length), got {lengths.tolist()}")
        return lengths.to(device=device, dtype=torch.long)

    def _check_times(self, times: Tensor | None, batch: int, steps: int, x: Tensor, state: State) -> Tensor | None:
        if not self.takes_time:
            if times is not None:
                raise ValueError(f"{self.cell_type.__name__} takes no timestamps, but times were given")
            return None
        # Timestamps in at least float32, whatever the model's dtype: a bfloat16 timestamp is not
        # exact past 256 (and a float16 one past 2048), which would shift the Phased LSTM's gate.
        dtype = torch.promote_types(x.dtype, torch.float32)
        if times is None:  # the steps after the state's: 0, 1, ... from a fresh state
            start = self.cell_type.next_time(self.state_type(*(field[0] for field in state)))  # (B,)
            return start.unsqueeze(1).to(dtype) + torch.arange(steps, device=x.device, dtype=dtype)
        expected = (batch, steps) if self.batch_first else (steps, batch)
        if tuple(times.shape) != expected:
            raise ValueError(f"times must have shape {expected} like the input without its feature axis, got {tuple(times.shape)}")
        times = times.to(device=x.device, dtype=dtype)
        return times if self.batch_first else times.transpose(0, 1)

    def _check_state(self, state: State | None, batch: int, x: Tensor) -> State:
        if state is None:
            return self.init_state(batch, device=x.device, dtype=x.dtype)
        expected = (self.num_layers * self.num_directions, batch, self.hidden_size)
        fields = self.state_type._fields
        if len(state) != len(fields) or any(tuple(field.shape) != expected for field in state):
            shapes = [tuple(field.shape) for field in state]
            raise ValueError(f"state must be {self.state_type.__name__}{fields} with fields of shape {expected}, got {shapes}")
        return self.state_type(*state)

    def extra_repr(self) -> str:
        return (
            f"{self.cell_type.__name__}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"dropout={self.dropout}, bidirectional={self.bidirectional}, batch_first={self.batch_first}"
        )
