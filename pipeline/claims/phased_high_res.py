"""Claim 5b (seed 002): Phased LSTM beats a timestamp-fed LSTM on high-resolution sampling."""

from rnnzoo.pipeline.claims.phased_frequency import frequency_claim

CLAIM = frequency_claim(
    "phased_high_res",
    "high_res",
    20.0,
    figure="Fig. 3: frequency discrimination, high-resolution sampling: Phased LSTM 99.6% vs LSTM 51.8%",
    reference=0.996,
)
