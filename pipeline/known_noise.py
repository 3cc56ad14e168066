"""Third-party warnings that say nothing to an rnnzoo user, silenced by their exact message.

Each entry is a message that torch's ONNX exporter, onnxruntime or MLflow prints on every export
or run of a healthy model, with why it is noise here. Only these messages, from these categories or
loggers, are dropped, and only inside :func:`silenced`: any other warning of the same category
(or any other record of the same logger) still shows.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

# (category, message regex): Python warnings.
WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # torch's exporter pickles pytree specs through a deprecated isinstance; torch's own business.
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # Our dynamic axes share one name on purpose (every input's batch axis is the same "batch").
    (UserWarning, r"# The axis name: \w+ will not be used, since it shares the same shape constraints"),
    # MLflow's ONNX flavour asks for CUDA then the CPU; on a CPU-only onnxruntime the CPU is used, as meant.
    (UserWarning, r"Specified provider 'CUDAExecutionProvider' is not in available provider names"),
    # MLflow registers its local-file dataset source under two schemes ("" and "file"): one class, no ambiguity.
    (UserWarning, r"The specified dataset source can be interpreted in multiple ways: LocalArtifactDatasetSource, LocalArtifactDatasetSource\."),
)
# (logger name, message regex): logging records.
RECORDS: tuple[tuple[str, str], ...] = (
    # The exporter registers torchvision's operators when torchvision is there; our models use none.
    ("torch.onnx._internal.exporter._registration", r"torchvision is not installed"),
    # The same on MLflow's side when it loads the logged model to check it.
    ("mlflow.onnx", r"ONNX model declares execution providers .* are unavailable in this onnxruntime build"),
)


class _Drop(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Within the block, drop the known messages above; everything else shows as usual."""
    filters = [(logging.getLogger(name), _Drop(pattern)) for name, pattern in RECORDS]
    for logger, drop in filters:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for category, pattern in WARNINGS:
                warnings.filterwarnings("ignore", message=pattern, category=category)
            yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)
