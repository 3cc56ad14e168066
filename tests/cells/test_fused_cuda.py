"""The fused LSTM path on cuDNN: weights packed once, no per-call re-packing."""

import warnings

import pytest
import torch

from rnnzoo import cells

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_lstm_on_cuda_uses_packed_weights_and_trains(bidirectional: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # TF32 would round matmuls to ~1e-4 relative; compare the two paths in full float32.
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    layer = cells.make("lstm", 3, 8, num_layers=2, bidirectional=bidirectional).cuda()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(4, 6, 3, device="cuda")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*contiguous chunk of memory.*")
        for _ in range(2):  # the second call checks the optimizer step kept the packing valid
            outputs, _ = layer(x, lengths=torch.tensor([6, 2, 5, 1]))
            optimizer.zero_grad()
            outputs.square().mean().backward()
            optimizer.step()
    reference = cells.make("lstm", 3, 8, num_layers=2, bidirectional=bidirectional, fused=False).cuda()
    reference.load_state_dict(layer.state_dict())
    expected, _ = reference(x, lengths=torch.tensor([6, 2, 5, 1]))
    actual, _ = layer(x, lengths=torch.tensor([6, 2, 5, 1]))
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)
