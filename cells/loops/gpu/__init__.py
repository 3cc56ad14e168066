"""The fused time loops on CUDA: Triton kernels registered as the ops' CUDA implementations.

``cells.loops.ops`` defines the ops (schemas, fakes, autograd); this package adds a CUDA kernel
to each, so the same layer code, autograd formula and ``torch.compile`` graph serve both
devices. Triton's interpreter (``TRITON_INTERPRET=1``) runs the same kernels on CPU tensors,
which is how the parity tests run them where no GPU is present.
"""

from __future__ import annotations

from rnnzoo.cells.loops.gpu import indrnn, janet, lstm, rhn
from rnnzoo.cells.loops.ops import LIBRARY, versioned

KERNELS = {
    "janet_loop": janet.forward,
    "janet_loop_backward": janet.backward,
    "indrnn_loop": indrnn.forward,
    "indrnn_loop_backward": indrnn.backward,
    "phased_lstm_loop": lstm.phased_forward,
    "phased_lstm_loop_backward": lstm.phased_backward,
    "lstm_loop": lstm.lstm_forward,
    "lstm_loop_backward": lstm.lstm_backward,
    "rhn_loop": rhn.forward,
    "rhn_loop_backward": rhn.backward,
}
for _name, _kernel in KERNELS.items():
    LIBRARY.impl(versioned(_name), _kernel, "CUDA")
