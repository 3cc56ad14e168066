"""Chrono-LSTM (Tallec & Ollivier, "Can recurrent neural networks warp time?", ICLR 2018).

An LSTM (see ``cells.lstm``) whose gate biases start at the chrono initialisation::

    b_f ~ log(U(1, T_max - 1))        b_i = -b_f        b_g = b_o = 0

(effective biases, ``bias_ih + bias_hh``). The paper is silent on ``b_g`` and ``b_o``; they
start at 0 as in the original code, the Keras Chrono-LSTM and the JANET authors' chrono init
(github.com/JosvanderWesthuizen/janet; see ``cells.chrono``). ``max_timescale`` (the paper's
``T_max``, the longest dependency the task needs) is required. The weights keep the LSTM's
default init; the cell runs on ``torch.nn.LSTM``'s kernel like the plain LSTM.
"""

from __future__ import annotations

from rnnzoo.cells.chrono import chrono_initialize_
from rnnzoo.cells.lstm import LSTMCell


class ChronoLSTMCell(LSTMCell):
    """LSTM step with chrono-initialised gate biases."""

    def __init__(self, input_size: int, hidden_size: int, max_timescale: float) -> None:
        self.max_timescale = max_timescale
        super().__init__(input_size, hidden_size)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        chrono_initialize_(self, self.max_timescale)
