"""rnnzoo: the recurrent cells that papers proposed as better LSTMs, and a pipeline for them.

- ``rnnzoo.cells``: the cells and their layer (needs torch alone); ``from rnnzoo import cells``.
- ``rnnzoo.pipeline``: prepare, train, evaluate, export, bench, serve, with DVC and MLflow (the
  ``pipeline`` extra); its command line is ``rnnzoo``.

One import name for both, so neither shadows nor is shadowed by other packages named ``cells`` or
``pipeline``. In the repository the two live in the top-level folders ``cells/`` and
``pipeline/``; the wheel installs them as ``rnnzoo/cells`` and ``rnnzoo/pipeline``.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

# In a source checkout (the folder above holds pyproject.toml), the subpackages are found in the
# top-level folders, so `python -m rnnzoo.pipeline.cli` runs from a clone without an install.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "cells" / "__init__.py").is_file():
    __path__.append(str(_checkout))

try:
    __version__ = metadata.version("rnnzoo")
except metadata.PackageNotFoundError:  # a checkout run without an install
    __version__ = "0+unknown"

__all__ = ["__version__"]
