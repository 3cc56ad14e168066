"""The fast path of ``lstm`` and ``chrono_lstm``: a stack of LSTM cells on ``torch.nn.LSTM``'s kernel.

``torch.nn.LSTM`` calls ``torch._VF.lstm`` with its flat weight list; handing it our cells'
weights (same layout, same order) runs the whole stack, bidirectional and packed variable
lengths included, in one call: cuDNN on GPU, the fused CPU kernel otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.backends.cudnn import rnn as cudnn_rnn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnzoo.cells.lstm import LSTMCell, LSTMState
from rnnzoo.cells.lstm_stack_op import lstm_stack


def flat_weights(cells: Sequence[LSTMCell]) -> list[Tensor]:
    """The weights in ``torch.nn.LSTM``'s ``_flat_weights`` order: per layer and direction."""
    return [w for cell in cells for w in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]


@torch.no_grad()
def flatten_for_cudnn(cells: Sequence[LSTMCell], num_layers: int, bidirectional: bool) -> None:
    """Lay the weights out in one contiguous cuDNN buffer, as ``torch.nn.LSTM.flatten_parameters``.

    Without it cuDNN copies every weight into a fresh buffer at each call (and warns).
    """
    weights = flat_weights(cells)
    first = weights[0]
    same_kind = all(w.dtype == first.dtype and w.device == first.device for w in weights)
    if not (same_kind and first.is_cuda and torch.backends.cudnn.is_acceptable(first) and torch._use_cudnn_rnn_flatten_weight()):
        return
    torch._cudnn_rnn_flatten_weight(
        weights, 4, cells[0].input_size, cudnn_rnn.get_cudnn_mode("LSTM"), cells[0].hidden_size, 0, num_layers, True, bidirectional
    )


def run_torch_lstm(
    cells: Sequence[LSTMCell],
    x: Tensor,
    state: LSTMState,
    lengths: Tensor | None,
    num_layers: int,
    dropout: float,
    training: bool,
    bidirectional: bool,
) -> tuple[Tensor, LSTMState]:
    """Run the stack on ``x`` ``(B, T, I)``; ``state`` fields are ``(L*D, B, H)``."""
    weights = flat_weights(cells)
    hx: tuple[Tensor, ...] = (state.h, state.c)
    dropout = dropout if training else 0.0
    # cuDNN's "train" flag keeps what backward needs; an eval-mode forward may be differentiated too.
    keep_for_backward = training or torch.is_grad_enabled()
    if lengths is None and not training and torch.compiler.is_exporting():
        outputs, h, c = lstm_stack(x, *hx, weights, num_layers, bidirectional)  # T stays symbolic
        return outputs, LSTMState(h, c)
    if lengths is None:
        outputs, h, c = torch._VF.lstm(x, hx, weights, True, num_layers, dropout, keep_for_backward, bidirectional, True)
        return outputs, LSTMState(h, c)
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    assert packed.sorted_indices is not None and packed.unsorted_indices is not None  # set when enforce_sorted=False
    hx = tuple(t.index_select(1, packed.sorted_indices) for t in hx)
    data, h, c = torch._VF.lstm(packed.data, packed.batch_sizes, hx, weights, True, num_layers, dropout, keep_for_backward, bidirectional)
    packed_out = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.shape[1])  # zeros past each end
    return outputs, LSTMState(h.index_select(1, packed.unsorted_indices), c.index_select(1, packed.unsorted_indices))
