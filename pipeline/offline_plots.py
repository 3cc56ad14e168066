"""`dvc plots show` without a network: DVC's page template with vega, vega-lite and vega-embed inline.

DVC's own page loads those three scripts from cdn.jsdelivr.net, so on a machine without internet
(or behind a proxy) `dvc plots show` writes a page that draws nothing. ``make`` runs this module
once (``python -m rnnzoo.pipeline.offline_plots``): it downloads the versions DVC's page names
from the npm registry (``$npm_config_registry`` if set, npm's own variable for a mirror), checks
each tarball against the sha512 pinned below (npm's ``integrity``), writes ``.dvc/plots/offline.html``
(git-ignored) with the scripts inline and no ``{scripts}`` placeholder (where DVC would put its CDN
tags), and points this clone's DVC at it (``dvc config --local plots.html_template``). Without the
registry it says so and changes nothing: `dvc plots show` then uses DVC's page, online.
"""

from __future__ import annotations

import base64
import io
import os
import string
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rnnzoo.pipeline import files
from rnnzoo.pipeline.tasks.base import TaskError
from rnnzoo.pipeline.tasks.download import download

REGISTRY = "https://registry.npmjs.org"
TEMPLATE = Path(".dvc") / "plots" / "offline.html"  # under the project root
CONFIG_VALUE = "plots/offline.html"  # DVC reads a relative html_template from .dvc/


@dataclass(frozen=True)
class Package:
    """One npm package: its version, the script in its tarball and the tarball's npm ``integrity``."""

    name: str
    version: str
    script: str  # path inside the tarball
    integrity: str  # "sha512-<base64>", as the registry's metadata gives it

    def url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.name}/-/{self.name}-{self.version}.tgz"

    def sha512(self) -> str:
        algorithm, _, encoded = self.integrity.partition("-")
        assert algorithm == "sha512", self.integrity
        return base64.b64decode(encoded).hex()


# The versions dvc_render's vega page names (dvc_render/vega.py), in load order.
PACKAGES = (
    Package(
        "vega",
        "5.20.2",
        "package/build/vega.min.js",
        "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
    ),
    Package(
        "vega-lite",
        "5.2.0",
        "package/build/vega-lite.min.js",
        "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
    ),
    Package(
        "vega-embed",
        "6.18.2",
        "package/build/vega-embed.min.js",
        "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
    ),
)

# DVC's page (dvc_render/html.py) with its {scripts} placeholder replaced: DVC fills {refresh_tag}
# and {plot_divs}; $names and $inline are ours (string.Template leaves the braces alone).
PAGE = string.Template("""<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- rnnzoo.pipeline.offline_plots: $names, inline (no CDN) -->
$inline
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
""")


def _script(package: Package, registry: str, folder: Path) -> str:
    """The package's script, from its tarball downloaded into ``folder`` and checked."""
    tarball = download([package.url(registry)], folder / f"{package.name}.tgz", package.sha512(), algorithm="sha512")
    with tarfile.open(tarball) as archive:
        member = archive.extractfile(package.script)
        if member is None:
            raise TaskError(f"{package.name}@{package.version}: {package.script} is not a file in its tarball")
        text = io.TextIOWrapper(member, encoding="utf-8").read()
    # Inline, a "</script" inside the code would end the element early.
    return "    <script>\n" + text.replace("</script", "<\\/script") + "\n    </script>"


def page(registry: str = REGISTRY, packages: tuple[Package, ...] = PACKAGES) -> str:
    """DVC's page template with ``packages``' scripts inline; keeps DVC's ``{plot_divs}`` and ``{refresh_tag}``."""
    with tempfile.TemporaryDirectory() as folder:
        inline = "\n".join(_script(package, registry, Path(folder)) for package in packages)
    return PAGE.substitute(names=", ".join(f"{p.name}@{p.version}" for p in packages), inline=inline)


def install(project: Path, registry: str = REGISTRY, packages: tuple[Package, ...] = PACKAGES, dvc: str = "dvc") -> Path:
    """Write the template under ``project`` (temp file, then rename) and set this clone's DVC to use it."""
    text = page(registry, packages)
    target = project / TEMPLATE
    target.parent.mkdir(parents=True, exist_ok=True)
    files.write_text(text, target)
    subprocess.run([dvc, "config", "--local", "plots.html_template", CONFIG_VALUE], cwd=project, check=True, capture_output=True)
    return target


def main() -> int:
    registry = os.environ.get("npm_config_registry") or REGISTRY
    dvc = str(Path(sys.executable).with_name("dvc"))
    try:
        target = install(Path.cwd(), registry, dvc=dvc if Path(dvc).is_file() else "dvc")
    except (TaskError, OSError, subprocess.CalledProcessError) as error:
        print(f"rnnzoo: dvc plots show stays on DVC's online page (its scripts from a CDN): {error}", file=sys.stderr)
        return 1
    print(f"dvc plots show renders offline: {target} ({', '.join(p.name + '@' + p.version for p in PACKAGES)} inline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
