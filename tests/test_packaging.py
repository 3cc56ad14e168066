"""The wheel: one import name (``rnnzoo``), the cells on torch alone, the pipeline as an extra.

The repository keeps the design's top-level folders ``cells/`` and ``pipeline/``; pyproject.toml
maps them to ``rnnzoo.cells`` and ``rnnzoo.pipeline``. These tests build the wheel and install
it into a fresh virtual environment beside two other packages named ``cells`` and ``pipeline``.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.project_copy import ROOT, copy_project

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser, vendored by pip
    from pip._vendor import tomli as tomllib

# The pipeline's own dependencies: none of them may be imported by the cells library.
PIPELINE_MODULES = ("mlflow", "typer", "dvc", "onnx", "onnxscript", "onnxruntime", "yaml", "tqdm", "sklearn", "matplotlib", "fastapi", "uvicorn")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_wheels_package_list_is_every_package_folder():
    setuptools = _pyproject()["tool"]["setuptools"]
    found = {"rnnzoo"}
    for top in ("cells", "pipeline"):
        assert setuptools["package-dir"][f"rnnzoo.{top}"] == top
        for folder in [ROOT / top, *(p for p in (ROOT / top).rglob("*") if p.is_dir())]:
            if folder.name != "__pycache__" and any(folder.glob("*.py")):
                found.add(".".join(["rnnzoo", *folder.relative_to(ROOT).parts]))
    assert sorted(setuptools["packages"]) == sorted(found), "pyproject.toml's [tool.setuptools] packages must list every package folder"


def test_the_cells_library_imports_and_runs_without_the_pipelines_dependencies():
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in PIPELINE_MODULES)
    code = f"import sys; {blocked}\nimport torch\nfrom rnnzoo import cells\nout, _ = cells.make('janet', 2, 4)(torch.randn(3, 5, 2))\nprint(tuple(out.shape))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3, 5, 4)"


def test_the_rnnzoo_command_without_the_pipeline_extra_says_which_extra_to_install():
    code = "import sys; sys.modules['typer'] = None\nfrom rnnzoo.entry import main\nmain()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "rnnzoo: the command line needs the pipeline extra (typer is not installed): pip install 'rnnzoo[pipeline,cpu]' (or [pipeline,gpu] on a CUDA machine)"
    ]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy: a build leaves build/ and *.egg-info behind, and a stale build/lib would ship in the wheel.
    source = copy_project(out / "source", ("rnnzoo", "cells", "pipeline", "pyproject.toml", "README.md", "LICENSE"))
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(source)]
    subprocess.run(build, check=True, capture_output=True, cwd=out)
    (path,) = out.glob("rnnzoo-*.whl")
    return path


def test_the_wheel_holds_one_top_level_package_and_declares_torch_alone_outside_the_extras(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(name for name in names if name.endswith(".dist-info/METADATA"))
        metadata = email.message_from_string(archive.read(info).decode())
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert {name.split("/")[0] for name in names} == {"rnnzoo", info.split("/")[0]}
    assert "rnnzoo/cells/layer.py" in names and "rnnzoo/pipeline/cli.py" in names
    assert "rnnzoo/cells/loops/csrc/janet.cpp" in names and "rnnzoo/cells/loops/csrc/gemm.h" in names, "the C++ sources ship"
    requires = metadata.get_all("Requires-Dist")
    core = sorted(r.split("==")[0] for r in requires if "extra ==" not in r)
    assert core == ["ninja", "torch"]
    assert any(r.startswith("mlflow") and 'extra == "pipeline"' in r for r in requires)
    assert "rnnzoo = rnnzoo.entry:main" in entry_points


def test_the_wheel_installs_beside_other_packages_named_cells_and_pipeline(wheel: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    for other in ("cells", "pipeline"):  # what PyPI's `cells` and `pipeline`, or a user's folders, would install
        (site / other).mkdir()
        (site / other / "__init__.py").write_text(f"WHOSE = 'another {other}'\n")
    # torch and the rest from this environment, after the new one's own packages (a path, not a
    # site folder: its .pth files, this checkout's editable install among them, are not run).
    (site / "zz_host.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = (
        "import cells, pipeline, rnnzoo, torch\n"
        "assert cells.WHOSE == 'another cells' and pipeline.WHOSE == 'another pipeline'\n"
        "from rnnzoo import cells as ours\n"
        "from rnnzoo.pipeline import config\n"
        "out, _ = ours.make('rhn', 2, 4, depth=2)(torch.randn(3, 5, 2))\n"
        "print(rnnzoo.__file__, ours.__file__, config.__file__, rnnzoo.__version__, 'x'.join(map(str, out.shape)))"
    )
    env = {**os.environ, "RNNZOO_NATIVE": "0"}  # no C++ build for this throwaway install
    env.pop("PYTHONPATH", None)
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    assert result.returncode == 0, result.stderr
    package, cells_file, config_file, version, shape = result.stdout.split()
    for path in (package, cells_file, config_file):
        assert Path(path).is_relative_to(site), path
    assert version == _pyproject()["project"]["version"] and shape == "3x5x4"
