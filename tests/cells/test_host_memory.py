"""keep_freed_memory: a training loop's large buffers are reused, not page-faulted back every step."""

from __future__ import annotations

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
_PAGES = 5 * (64 << 20) // 4096


def _page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _CYCLES, mode], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: the C library of Linux CI")
def test_freed_buffers_are_reused_without_page_faults() -> None:
    assert _page_faults("default") > _PAGES // 2  # glibc's defaults: the freed block goes back to the kernel
    assert _page_faults("keep") < _PAGES // 100


def test_without_glibc_nothing_is_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_memory.platform, "libc_ver", lambda: ("", ""))
    assert host_memory.keep_freed_memory.__wrapped__() is False
