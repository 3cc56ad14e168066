"""A Griffe extension (mkdocs.yml loads it) that finds subpackages living outside their parent's folder.

pyproject's ``package-dir`` maps ``rnnzoo.cells`` to the checkout's top-level folder ``cells/``, and
in a checkout ``rnnzoo/__init__.py`` extends ``__path__`` at import time. Griffe reads a package
from disk, folder by folder, so in a checkout it finds ``rnnzoo/`` without ``cells``; inspection
(``force_inspection``) does not help, since Griffe still walks only ``rnnzoo/`` for submodules.
This extension asks Python's import system where each listed subpackage is (``find_spec``, which
imports the parent, not the subpackage) and, where Griffe has not found it, reads that folder
statically as the subpackage. From an installed wheel the folders nest as usual and it does nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import griffe


class PackageDir(griffe.Extension):
    """Attach ``subpackages`` (dotted names) found by the import system to their parent package."""

    def __init__(self, subpackages: list[str]) -> None:
        super().__init__()
        self.subpackages = subpackages

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for dotted in self.subpackages:
            parent, _, name = dotted.rpartition(".")
            if parent != pkg.path or (name in pkg.members and pkg.members[name].is_module):
                continue
            folder = _import_folder(dotted, loader.finder.search_paths)
            subpackage = _visit_package(folder, name, pkg, loader)
            loader.expand_exports(subpackage)


def _import_folder(dotted: str, search_paths: list[Path]) -> Path:
    """The folder Python would import the package ``dotted`` from, Griffe's search paths first."""
    saved = sys.path[:]
    sys.path[:0] = [str(path) for path in search_paths if str(path) not in sys.path]
    try:
        spec = importlib.util.find_spec(dotted)
    finally:
        sys.path[:] = saved
    if spec is None or spec.origin is None or Path(spec.origin).name != "__init__.py":
        raise griffe.LoadingError(f"{dotted} is not a package the import system finds (spec: {spec})")
    return Path(spec.origin).parent


def _visit_package(folder: Path, name: str, parent: griffe.Module, loader: griffe.GriffeLoader) -> griffe.Module:
    """Read ``folder`` (a package) and its modules and subpackages statically, as ``parent``'s member ``name``."""
    module = _visit(folder / "__init__.py", name, parent, loader)
    for path in sorted(folder.iterdir()):
        if path.suffix == ".py" and path.stem != "__init__":
            _visit(path, path.stem, module, loader)
        elif path.is_dir() and (path / "__init__.py").is_file():
            _visit_package(path, path.name, module, loader)
    return module


def _visit(path: Path, name: str, parent: griffe.Module, loader: griffe.GriffeLoader) -> griffe.Module:
    code = path.read_text(encoding="utf-8-sig")
    loader.lines_collection[path] = code.splitlines(keepends=False)
    module = griffe.visit(
        name,
        filepath=path,
        code=code,
        extensions=loader.extensions,
        parent=parent,
        docstring_parser=loader.docstring_parser,
        docstring_options=loader.docstring_options,
        lines_collection=loader.lines_collection,
        modules_collection=loader.modules_collection,
    )
    parent.set_member(name, module)
    return module
