"""Claim 2b (seed 000): JANET is more accurate than an LSTM on permuted MNIST."""

from rnnzoo.pipeline.claims.janet_mnist import mnist_claim

CLAIM = mnist_claim(
    "janet_pmnist",
    permuted=True,
    paper_layers=1,
    figure="Table 1: pMNIST test accuracy, JANET 92.5 vs LSTM 91.0 (1 x 128 units)",
    reference=0.925,
)
