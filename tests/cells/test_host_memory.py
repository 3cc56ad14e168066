"""keep_freed_memory: a training loop's large buffers are reused, not page-faulted back every step."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from rnnzoo.cells.loops import host_memory

# A 64 MiB tensor allocated, written and freed 5 times, after 10 such cycles of warm-up: each
# cycle that gets fresh pages from the kernel faults 16,384 times (4 KiB pages).
_CYCLES = """
import resource, sys, torch
from rnnzoo.cells.loops.host_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() is True
def cycle():
    torch.empty(64 << 18).fill_(1.0)
for _ in range(10):
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
_PAGES = 5 * (64 << 20) // 4096  # 81,920 (fewer where transparent huge pages back the fresh mappings)


def _page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _CYCLES, mode], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc (CI's C library)"
)
def test_freed_buffers_are_reused_without_page_faults() -> None:
    default, kept = _page_faults("default"), _page_faults("keep")
    assert default > 100, "glibc's defaults give the freed 64 MiB back to the kernel: faults on every cycle"
    assert kept < min(default // 20, _PAGES // 100), (default, kept)


def test_without_glibc_nothing_is_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_memory.platform, "libc_ver", lambda: ("", ""))
    assert host_memory.keep_freed_memory.__wrapped__() is False
