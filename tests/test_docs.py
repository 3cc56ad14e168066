"""The API reference (mkdocs.yml, docs/): it builds without a warning, one page per registered cell.

Each cell's page is rendered by mkdocstrings from the cell module's docstring, so it must show
what that docstring states: the paper (authors and year, the arXiv id), the original code's
address where one is named, and every line of the equations (the docstring's ``::`` blocks).
The expected text is read from the docstrings here, not copied into the test.
"""

from __future__ import annotations

import html
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rnnzoo import cells

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (the docs extra: pip install -e '.[docs]')"
)

ROOT = Path(__file__).resolve().parent.parent
# Authors then a year within one sentence: "Hochreiter & Schmidhuber 1997", "Neil, Pfeiffer & Liu,
# "Phased LSTM: ...", NIPS 2016", "Cooijmans et al., 2017".
CITATION = re.compile(r"[A-Z][\w-]+(?:, [A-Z][\w-]+)*(?: & [A-Z][\w-]+| et al\.)[^.]*?\b(?:19|20)\d\d\b")
ARXIV = re.compile(r"arXiv:\d{4}\.\d{4,5}")
CODE_ADDRESS = re.compile(r"github\.com/[\w.-]+/[\w.-]*\w")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        cwd=out.parent,  # not the checkout: mkdocs.yml must find the package itself
        capture_output=True,
        text=True,
        timeout=120,
        check=False,  # the assertion below shows mkdocs' output
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert "WARNING" not in build.stderr, build.stderr
    return out


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _page_text(site: Path, page: str) -> str:
    """The built page's text: tags removed, entities decoded, whitespace runs made one space."""
    markup = (site / page / "index.html").read_text(encoding="utf-8")
    return _normalized(html.unescape(re.sub(r"<[^>]+>", "", markup)))


def _equation_lines(docstring: str) -> list[str]:
    """The lines of the docstring's literal blocks: the indented lines after a paragraph ending in ``::``."""
    lines, inside = [], False
    for line in inspect.cleandoc(docstring).splitlines():
        if inside and line.strip() and not line.startswith(" "):
            inside = False
        if inside and line.strip():
            lines.append(line.strip())
        if line.rstrip().endswith("::"):
            inside = True
    return lines


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    return []


def test_every_registered_cell_has_a_page_and_a_nav_entry():
    import yaml  # mkdocs' own dependency

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = {Path(page).stem for page in _nav_pages(config["nav"]) if page.startswith("cells/")}
    on_disk = {path.stem for path in (ROOT / "docs" / "cells").glob("*.md")}
    assert on_disk == set(cells.names())
    assert in_nav == set(cells.names())


@pytest.mark.parametrize("name", cells.names())
def test_cell_page_shows_its_paper_and_equations(site: Path, name: str):
    docstring = sys.modules[f"rnnzoo.cells.{name}"].__doc__
    page = _page_text(site, f"cells/{name}")

    citation = CITATION.search(docstring)
    assert citation, f"the docstring of rnnzoo.cells.{name} names no paper (authors and a year)"
    for reference in [citation.group(), *ARXIV.findall(docstring), *CODE_ADDRESS.findall(docstring)]:
        assert _normalized(reference) in page, f"{name}'s page lacks {reference!r}"

    equations = _equation_lines(docstring)
    assert equations, f"the docstring of rnnzoo.cells.{name} has no equations (an indented block after '::')"
    for line in equations:
        assert _normalized(line) in page, f"{name}'s page lacks the equation line {line!r}"
