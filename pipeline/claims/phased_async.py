"""Claim 5a (seed 002): Phased LSTM beats a timestamp-fed LSTM under asynchronous sampling."""

from rnnzoo.pipeline.claims.phased_frequency import frequency_claim

CLAIM = frequency_claim(
    "phased_async",
    "async",
    50.0,
    figure="Fig. 3: frequency discrimination, asynchronous sampling: Phased LSTM 97.9% vs LSTM 69.0%",
    reference=0.979,
)
