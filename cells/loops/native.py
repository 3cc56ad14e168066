"""Builds and loads the fused CPU time loops (``csrc/*.cpp``) on first use.

The loops are C++ ATen kernels registered as ``torch.library`` ops (``rnnzoo::<cell>_loop`` and
its ``_backward``); the schemas, fake implementations and autograd formulas live in Python
(``cells.loops.ops``), so ``torch.compile`` and ``torch.export`` see the ops even where nothing
was built. The build runs ``torch.utils.cpp_extension.load`` once per machine and torch version
(under a minute on 2 cores; ``make`` runs it at install time: ``python -c 'from
rnnzoo.cells.loops import native; native.load()'``) and is cached under
``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``) in a folder named by a hash of
the sources (and their folder), flags, torch version (and its folder) and CPU, so a changed
source or torch rebuilds, nothing stale is loaded, and two checkouts or environments do not
rebuild each other's build. The build runs the ninja that rnnzoo depends on (the ``ninja``
package), not whichever is first on PATH: ninja 1.13 hashes build commands differently from
earlier versions, so two processes with different PATHs (an activated venv and a system ninja)
rebuilt the same folder each time the other had. Where no compiler is found or the build fails, ``load()`` warns once
and returns False: the layers then run their reference Python loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import platform
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

SOURCES = sorted((Path(__file__).parent / "csrc").glob("*.cpp"))
HEADERS = sorted((Path(__file__).parent / "csrc").glob("*.h"))
# -march=native: the build runs on the machine that runs the loops (the cache key names the CPU);
# -fno-trapping-math lets gcc vectorise the float-to-int step of exp_vectorizable.
CFLAGS = ["-O3", "-march=native", "-fno-trapping-math"]
# Set to 0 to skip the build and run the reference loop (for comparisons and for tests).
ENV_SWITCH = "RNNZOO_NATIVE"


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux): part of the build's key, and of bench tables."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_name() -> str:
    """The extension's name: a digest of everything that makes its binary."""
    digest = hashlib.sha256()
    # The paths on the build's command line too (the sources' folder, torch's headers as torch
    # names them: a virtual environment reached through a symlink names them differently): ninja
    # rebuilds when the command line changes, so two checkouts or environments sharing one build
    # folder would rebuild it each time the other loads it.
    digest.update(str(SOURCES[0].parent).encode())  # as the build's command line names them
    digest.update(os.path.dirname(torch.__file__).encode())
    digest.update(str(ninja_dir()).encode())  # one ninja per build folder (see the module's docstring)
    for path in (*SOURCES, *HEADERS):
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(" ".join([*_flags(), torch.__version__, cpu_name(), platform.python_version()]).encode())
    return f"rnnzoo_loops_{digest.hexdigest()[:16]}"


def _flags() -> list[str]:
    from rnnzoo.cells.loops.ops import VERSION  # the ops' names carry it; the kernels register under them

    return [*CFLAGS, f"-DRNNZOO_OPS_VERSION={VERSION}"]


def build_dir() -> Path:
    """The folder the loops are built into (under ``TORCH_EXTENSIONS_DIR``); made if missing."""
    from torch.utils import cpp_extension

    return Path(cpp_extension._get_build_directory(build_name(), verbose=False))


def ninja_dir() -> str | None:
    """The folder of the ninja the build runs: the ``ninja`` package's, else the first on PATH's (None: none found)."""
    try:
        import ninja  # the pinned dependency (pyproject.toml)

        return str(ninja.BIN_DIR)
    except (ImportError, AttributeError):
        found = shutil.which("ninja")
        return os.path.dirname(found) if found else None


@contextlib.contextmanager
def _ninja_first_on_path() -> Iterator[None]:
    """Put ``ninja_dir()`` first on PATH while torch builds (torch runs ``ninja`` from PATH)."""
    folder, before = ninja_dir(), os.environ.get("PATH")
    if folder is None:
        yield
        return
    os.environ["PATH"] = os.pathsep.join([folder, *([before] if before else [])])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = before


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock for building into ``folder``; clear a lock torch left there.

    torch's build takes a lock *file* (``folder/lock``) and waits, without end, while it
    exists: a build killed part-way (Ctrl-C, a killed test) would hang every later one. Builders
    of this folder take this ``flock`` first, which the kernel releases when a process dies, so
    whoever holds it and still finds torch's file knows the file is stale.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "rnnzoo.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (folder / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@functools.cache
def load() -> bool:
    """Build (once) and load the CPU loops; False, with one warning, where that is not possible."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    from rnnzoo.cells.loops import ops  # noqa: F401  the schemas must exist before the kernels register

    try:
        from torch.utils import cpp_extension

        with _build_lock(build_dir()), _ninja_first_on_path():
            cpp_extension.load(
                name=build_name(), sources=[str(path) for path in SOURCES], extra_cflags=_flags(), is_python_module=False, verbose=False
            )
    except Exception as error:  # noqa: BLE001  no compiler, no ninja, a failed build: all mean "use the reference loop"
        # A failed build's message is the whole compiler log: show its first error, not the command line.
        lines = str(error).strip().splitlines() or [type(error).__name__]
        first_line = next((line.strip() for line in lines if "error:" in line), lines[0])[:300]
        warnings.warn(
            f"rnnzoo: the fused CPU time loops could not be built ({first_line}); layers run the slower reference "
            f"Python loop. Install a C++ compiler (g++ or clang++) and ninja, or set {ENV_SWITCH}=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True
