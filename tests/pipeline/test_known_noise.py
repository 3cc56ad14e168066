"""The third-party messages known to be noise are silenced by their exact text, and nothing else is; the
progress bar shows one speed."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import pytest

from rnnzoo.pipeline import config, known_noise
from rnnzoo.pipeline.stages.prepare import prepare
from rnnzoo.pipeline.stages.train import train

# Each silenced message as the library prints it (copied from a real export on this machine).
WARNING_SAMPLES = {
    0: "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()` instead.",
    1: "# The axis name: batch will not be used, since it shares the same shape constraints with another axis: batch.",
    2: "Specified provider 'CUDAExecutionProvider' is not in available provider names.Available providers: 'CPUExecutionProvider'",
    3: "The specified dataset source can be interpreted in multiple ways: LocalArtifactDatasetSource, LocalArtifactDatasetSource. "
    "MLflow will assume that this is a LocalArtifactDatasetSource source.",
}
RECORD_SAMPLES = {
    0: "torchvision is not installed. Skipping torchvision::nms",
    1: "ONNX model declares execution providers [('CUDAExecutionProvider', {'use_tf32': '0'}), 'CPUExecutionProvider'] but "
    "[('CUDAExecutionProvider', {'use_tf32': '0'})] are unavailable in this onnxruntime build; serving with ['CPUExecutionProvider'].",
}


def test_every_silenced_message_has_a_sample() -> None:
    assert set(WARNING_SAMPLES) == set(range(len(known_noise.WARNINGS)))
    assert set(RECORD_SAMPLES) == set(range(len(known_noise.RECORDS)))


@pytest.mark.parametrize("index", range(len(known_noise.WARNINGS)))
def test_a_known_warning_is_dropped_and_others_of_its_category_still_show(index: int) -> None:
    category, _ = known_noise.WARNINGS[index]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with known_noise.silenced():
            warnings.warn(WARNING_SAMPLES[index], category, stacklevel=1)
            warnings.warn("something the user must see", category, stacklevel=1)
        warnings.warn(WARNING_SAMPLES[index], category, stacklevel=1)  # outside the block: shown
    assert [str(w.message) for w in caught] == ["something the user must see", WARNING_SAMPLES[index]]


@pytest.mark.parametrize("index", range(len(known_noise.RECORDS)))
def test_a_known_log_record_is_dropped_and_others_of_its_logger_still_show(index: int, caplog: pytest.LogCaptureFixture) -> None:
    name, _ = known_noise.RECORDS[index]
    logger = logging.getLogger(name)
    with caplog.at_level(logging.WARNING, logger=name):
        with known_noise.silenced():
            logger.warning(RECORD_SAMPLES[index])
            logger.warning("something the user must see")
        logger.warning(RECORD_SAMPLES[index])
    assert [record.getMessage() for record in caplog.records if record.name == name] == [
        "something the user must see",
        RECORD_SAMPLES[index],
    ]


def known_noise_samples() -> list[str]:
    """Every silenced message as printed (the export test in test_mlflow_serving checks none shows)."""
    return [*WARNING_SAMPLES.values(), *RECORD_SAMPLES.values()]


def test_the_training_progress_bar_shows_one_speed_in_steps(workdir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    params = config.load(workdir / "params.yaml")
    prepare(params, "add-janet")
    capfd.readouterr()
    train(params, "add-janet", progress=True)
    bar = [line for line in capfd.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("train add-janet")][-1]
    assert re.search(r"[\d.]+(step/s|s/step)", bar), bar
    assert len(re.findall(r"/s\b|per_s", bar)) <= 1 and "it/s" not in bar and "s/it" not in bar, bar
