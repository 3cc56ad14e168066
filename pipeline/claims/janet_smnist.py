"""Claim 2a (seed 000): JANET is more accurate than an LSTM on sequential MNIST."""

from rnnzoo.pipeline.claims.janet_mnist import mnist_claim

CLAIM = mnist_claim(
    "janet_smnist",
    permuted=False,
    paper_layers=2,
    figure="Table 1: sMNIST test accuracy, JANET 99.0 vs LSTM 98.5 (2 x 128 units)",
    reference=0.99,
)
