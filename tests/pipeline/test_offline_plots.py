"""`dvc plots show` offline: the page template with vega's scripts inline, from checked npm tarballs.

The registry is a folder of tarballs the tests make (``file://``), so nothing here needs the
network; ``make`` runs the same code against registry.npmjs.org with the pinned digests.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from dvc_render.vega import VegaRenderer

from rnnzoo.pipeline import offline_plots
from rnnzoo.pipeline.offline_plots import Package
from rnnzoo.pipeline.tasks.base import TaskError

BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def _tarball(registry: Path, name: str, version: str, script: str, code: str) -> str:
    """Write ``name``'s tarball where the registry serves it; return its npm integrity."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as archive:
        payload = code.encode()
        member = tarfile.TarInfo(script)
        member.size = len(payload)
        archive.addfile(member, io.BytesIO(payload))
    path = registry / name / "-" / f"{name}-{version}.tgz"
    path.parent.mkdir(parents=True)
    path.write_bytes(data.getvalue())
    return "sha512-" + base64.b64encode(hashlib.sha512(data.getvalue()).digest()).decode()


@pytest.fixture
def registry(tmp_path: Path) -> tuple[str, tuple[Package, ...]]:
    """A file:// registry of three stand-in packages; each script sets a marker, one holds "</script>"."""
    folder = tmp_path / "registry"
    packages = []
    for name in ("vega", "vega-lite", "vega-embed"):
        script = f"package/build/{name}.min.js"
        code = f'window["{name}-loaded"] = true; var s = "</script>";'
        packages.append(Package(name, "1.0.0", script, _tarball(folder, name, "1.0.0", script, code)))
    return folder.as_uri(), tuple(packages)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git + DVC repository with one plot declared in dvc.yaml."""
    path = tmp_path / "project"
    path.mkdir()
    (path / "history.json").write_text(json.dumps([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]))
    (path / "dvc.yaml").write_text("plots:\n  - history.json:\n      x: step\n      y: loss\n")
    for command in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        subprocess.run(command, cwd=path, env=ENV, check=True, capture_output=True)
    return path


def test_dvc_plots_show_writes_a_page_with_the_scripts_inline_and_no_cdn(project: Path, registry, tmp_path: Path) -> None:
    uri, packages = registry
    template = offline_plots.install(project, uri, packages, dvc=str(BIN / "dvc"))
    text = template.read_text()
    assert text.count("{plot_divs}") == 1 and "{scripts}" not in text, "DVC fills plot_divs; no place for its CDN tags"
    assert '</script>";' not in text and text.count("<\\/script>") == 3, "a </script> in the code must not end the element"
    assert "html_template = plots/offline.html" in (project / ".dvc" / "config.local").read_text()

    shown = subprocess.run(
        [str(BIN / "dvc"), "plots", "show", "-o", str(tmp_path / "out")],
        cwd=project,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    page = (tmp_path / "out" / "index.html").read_text()
    assert all(f'window["{p.name}-loaded"]' in page for p in packages), "every script inline"
    assert not re.search(r"<script[^>]+src=", page), "no script is loaded from anywhere"
    assert "vegaEmbed(" in page and "history.json" in page, "the plot itself is on the page"


def test_a_tarball_that_does_not_match_its_digest_is_refused_and_nothing_is_written(project: Path, registry) -> None:
    uri, packages = registry
    tampered = (packages[0], Package(packages[1].name, "1.0.0", packages[1].script, packages[0].integrity), packages[2])
    with pytest.raises(TaskError, match=r"vega-lite\.tgz.*sha512 is [0-9a-f]+, expected [0-9a-f]+.*removed"):
        offline_plots.install(project, uri, tampered, dvc=str(BIN / "dvc"))
    assert not (project / offline_plots.TEMPLATE).exists()
    assert (
        not (project / ".dvc" / "config.local").exists() or "html_template" not in (project / ".dvc" / "config.local").read_text()
    )


def test_without_the_registry_make_step_says_why_in_one_line_and_changes_nothing(project: Path, tmp_path: Path) -> None:
    env = {**ENV, "npm_config_registry": (tmp_path / "nowhere").as_uri()}
    result = subprocess.run(
        [sys.executable, "-m", "rnnzoo.pipeline.offline_plots"], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("rnnzoo: dvc plots show stays on DVC's online page") and "vega-5.20.2.tgz" in result.stderr
    assert not (project / offline_plots.TEMPLATE).exists()


def test_the_pinned_packages_are_the_versions_dvcs_own_page_loads() -> None:
    # Upgrading dvc may move its page to other versions: the specs DVC writes are made for those.
    named = dict(re.findall(r"cdn\.jsdelivr\.net/npm/([a-z-]+)@([0-9.]+)", VegaRenderer.SCRIPTS))
    assert named == {p.name: p.version for p in offline_plots.PACKAGES}
    assert all(len(p.sha512()) == 128 for p in offline_plots.PACKAGES)
