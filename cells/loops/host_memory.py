"""Keep freed host memory in the process, so a CPU training loop stops page-faulting its buffers back.

A training step on the CPU allocates the same large buffers every step: the projected inputs,
the states and activations saved for the backward pass, their gradients (at H=128, B=32, T=400
a layer's are tens of MB each). glibc's malloc serves a block above its mmap threshold (dynamic,
at most 32 MiB) with a fresh ``mmap`` and gives it back to the kernel on free, and trims the heap
top above its trim threshold, so each step the kernel maps and zeroes those pages again: a minor
page fault per 4 KiB, tens a time step at T=400 (none at T=50, whose buffers fit under the
threshold and are reused). That, not the loops, made time per step grow with T on the CPU, for
``torch.nn.LSTM`` as for rnnzoo's loops (README, "Speed").

:func:`keep_freed_memory` raises both thresholds to :data:`KEPT_BYTES` with ``mallopt``, glibc's
own knob for this (the ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` environment
variables do the same before a process starts): blocks under it come from the heap and freed
memory stays there for the next step, up to ``KEPT_BYTES`` of it at the heap top. The cost is
resident memory: the process keeps its peak instead of returning it between steps. ``rnnzoo
train`` and ``rnnzoo bench cells`` call it; a script that trains rnnzoo's cells (or any torch
model) on the CPU can call it too. Elsewhere (macOS, musl, Windows) it does nothing: those
allocators keep their own policies. jemalloc or tcmalloc preloaded with ``LD_PRELOAD`` (PyTorch's
CPU tuning guide) is the other route; under them the call changes nothing.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import sys

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# 1 GiB: above any one buffer of the shapes this project trains, and a bound on what stays resident
# beyond the peak. mallopt takes an int.
KEPT_BYTES = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc malloc's mmap and trim thresholds to :data:`KEPT_BYTES` for this process.

    Returns True where they were set (Linux with glibc), False where this C library has no such
    knob (nothing changes there). Process-wide and not undone; calling it again does nothing.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Setting either also turns off glibc's dynamic thresholds, which move both after large frees.
    return bool(mallopt(M_MMAP_THRESHOLD, KEPT_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEPT_BYTES))
