"""The LSTM stack in inference as one opaque operator, ``rnnzoo::lstm_stack``, for exporters.

``torch.export`` traces ``torch._VF.lstm``'s CPU kernel step by step and fixes the sequence
length to the example's; behind a custom operator with a shape-only fake, T stays symbolic and
the exporter sees one node, which ``pipeline.onnx_export`` writes as ONNX's ``LSTM`` operator.
Eager runs never reach it: ``run_torch_lstm`` calls it only while exporting.
"""

# No `from __future__ import annotations`: torch.library reads the operator's schema from these hints.
import torch
from torch import Tensor


@torch.library.custom_op("rnnzoo::lstm_stack", mutates_args=())
def lstm_stack(x: Tensor, h0: Tensor, c0: Tensor, weights: list[Tensor], num_layers: int, bidirectional: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` ``(B, T, I)``, ``h0``/``c0`` ``(L*D, B, H)``, ``weights`` in ``torch.nn.LSTM``'s flat order -> outputs, h, c."""
    outputs, h, c = torch._VF.lstm(x, (h0, c0), weights, True, num_layers, 0.0, False, bidirectional, True)
    return outputs.contiguous(), h, c  # the kernel's batch-first output is a time-major view; the fake's is contiguous


@lstm_stack.register_fake
def _lstm_stack_shapes(x: Tensor, h0: Tensor, c0: Tensor, weights: list[Tensor], num_layers: int, bidirectional: bool) -> tuple[Tensor, Tensor, Tensor]:
    directions = 2 if bidirectional else 1
    return x.new_empty(x.shape[0], x.shape[1], directions * h0.shape[2]), torch.empty_like(h0), torch.empty_like(c0)
