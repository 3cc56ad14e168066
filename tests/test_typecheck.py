"""tools/typecheck.py: mypy sees the package as it installs, so types crossing modules are checked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("typecheck", ROOT / "tools" / "typecheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tree_lays_out_the_installed_package(tmp_path: Path) -> None:
    tree = _tool().build_tree(tmp_path / "tree")
    package = tree / "rnnzoo"
    assert (package / "__init__.py").resolve() == ROOT / "rnnzoo" / "__init__.py"
    assert (package / "cells" / "checks.py").resolve() == ROOT / "cells" / "checks.py"
    assert (package / "pipeline" / "config.py").resolve() == ROOT / "pipeline" / "config.py"


def test_a_type_error_across_modules_is_found(tmp_path: Path) -> None:
    """Over the repository's own layout rnnzoo.cells is missing to mypy (Any), and this passes.
    Its own cache, and torch not followed (Any): seconds, and the lint's cache untouched."""
    tool = _tool()
    tree = tool.build_tree(tmp_path / "tree")
    settings = tmp_path / "mypy.ini"
    settings.write_text("[mypy]\nignore_missing_imports = True\n\n[mypy-torch.*,triton.*,numpy.*]\nfollow_imports = skip\n")
    options = ("--config-file", str(settings), "--cache-dir", str(tmp_path / "cache"), "-m", "probe")  # the last of each wins
    (tree / "probe.py").write_text('from rnnzoo.cells.checks import require_positive_int\n\nwidth: str = require_positive_int("n", 1)\n')
    found = tool.mypy(tree, *options, capture=True)
    assert found.returncode == 1 and 'expression has type "int", variable has type "str"' in found.stdout, found.stdout
    (tree / "probe.py").write_text('from rnnzoo.cells.checks import require_positive_int\n\nwidth: int = require_positive_int("n", 1)\n')
    assert tool.mypy(tree, *options, capture=True).returncode == 0

