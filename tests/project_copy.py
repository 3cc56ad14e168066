"""A copy of the project in a temp folder, for tests that run its commands as a user would."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_project(destination: Path, names: Iterable[str]) -> Path:
    """Copy ``names`` (files and folders at the project root) into ``destination``, keeping file
    times (``make`` compares them) and leaving out ``__pycache__``."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, destination / name)
    return destination
