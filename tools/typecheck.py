"""mypy over the package as it installs: ``rnnzoo`` with ``cells/`` and ``pipeline/`` inside it.

pyproject's ``package-dir`` maps the repository's ``cells/`` and ``pipeline/`` folders to
``rnnzoo.cells`` and ``rnnzoo.pipeline``; mypy resolves module names from paths alone and cannot
follow that map, so run over the repository it would see every ``rnnzoo.*`` import as missing
(Any) and check no type that crosses between modules. This builds the installed layout as symbolic
links under ``build/typecheck/rnnzoo`` (nothing is copied: mypy reads the real files) and runs
mypy there with pyproject's ``[tool.mypy]``. Errors name ``rnnzoo/cells/x.py`` for ``cells/x.py``.

Usage: ``python tools/typecheck.py [mypy options]`` (``make lint`` runs it); exits with mypy's status.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"
# The folders pyproject's package-dir maps into the package, by their place in it.
MAPPED = {"cells": ROOT / "cells", "pipeline": ROOT / "pipeline"}


def build_tree(tree: Path = TREE) -> Path:
    """``tree/rnnzoo``: links to rnnzoo/'s files and to the mapped folders; returns ``tree``."""
    shutil.rmtree(tree, ignore_errors=True)
    package = tree / "rnnzoo"
    package.mkdir(parents=True)
    for source in (ROOT / "rnnzoo").glob("*.py"):
        (package / source.name).symlink_to(source)
    for name, folder in MAPPED.items():
        (package / name).symlink_to(folder, target_is_directory=True)
    return tree


def mypy(tree: Path, *arguments: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """mypy with pyproject's settings, run in ``tree`` (its cache kept in the repository's .mypy_cache)."""
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(ROOT / ".mypy_cache"), *arguments]
    return subprocess.run(command, cwd=tree, check=False, text=True, capture_output=capture)


def main(arguments: list[str]) -> int:
    return mypy(build_tree(), "-p", "rnnzoo", *arguments).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
