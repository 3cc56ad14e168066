"""Keep freed host memory in the process, so a CPU training loop stops page-faulting its buffers back.

A training step on the CPU allocates the same large buffers every step: the projected inputs,
the states and activations saved for the backward pass, their gradients (at H=128, B=32, T=400
a layer's are tens of MB each). glibc's malloc serves a block above its mmap threshold (dynamic,
at most 32 MiB) with a fresh ``mmap`` and gives it back to the kernel on free, and trims the heap
top above its trim threshold, so each step the kernel maps and zeroes those pages again: a minor
page fault per 4 KiB, 40-53 a time step at T=400 on the development machine. That, not the loops,
made time per step grow with T on the CPU, for ``torch.nn.LSTM`` as for rnnzoo's loops (README,
"Speed").

:func:`keep_freed_memory` raises both thresholds with ``mallopt``, glibc's own knob for this (the
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` environment variables do the same before
a process starts): blocks under the mmap threshold come from the heap, and freed memory stays
there for the next step, up to the trim threshold of it at the heap top. The cost is resident
memory: the process keeps its peak instead of returning it between steps. The stages that run
torch (train, evaluate, the bench stage) and ``rnnzoo bench cells`` call it; a script that trains
rnnzoo's cells (or any torch model) on the CPU can call it too.

Limits: glibc before 2.35 or so refuses an mmap threshold above 32 MiB (``HEAP_MAX_SIZE / 2``);
there the threshold is 32 MiB and larger blocks are still mapped afresh each time. Blocks above
:data:`KEPT_BYTES` always are (one (T, B, 4H) projection of pMNIST's evaluation batch of 1,000 is
1.6 GB). Other C libraries (macOS, musl, Windows) keep their own policies, and the call does
nothing there. jemalloc or tcmalloc preloaded with ``LD_PRELOAD`` (PyTorch's CPU tuning guide) is
the other route; under them glibc's malloc is not the one in use, whatever the call reports.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import sys

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# 1 GiB: above one buffer of the training shapes this project runs (pMNIST's saved activations are
# 80 MB a tensor), and mallopt takes an int. The trim threshold bounds the free memory kept at the
# heap top; freed blocks below the top are reused, never returned.
KEPT_BYTES = 1 << 30
# The highest mmap threshold older glibc accepts (HEAP_MAX_SIZE / 2 on 64-bit).
OLD_GLIBC_MMAP_MAX = 32 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc malloc's trim threshold to :data:`KEPT_BYTES`, and its mmap threshold to it or,
    where this glibc refuses that, to :data:`OLD_GLIBC_MMAP_MAX`, for this process.

    Returns True where both were set (Linux with glibc), False where this C library has no such
    knob or refused it (nothing changes then, or only the trim threshold). Process-wide and not
    undone; calling it again does nothing.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Each call is judged on its own (mallopt returns 1 on success); setting either also turns off
    # glibc's dynamic thresholds, which move both after large frees.
    trim = bool(mallopt(M_TRIM_THRESHOLD, KEPT_BYTES))
    mmap = bool(mallopt(M_MMAP_THRESHOLD, KEPT_BYTES)) or bool(mallopt(M_MMAP_THRESHOLD, OLD_GLIBC_MMAP_MAX))
    return trim and mmap
