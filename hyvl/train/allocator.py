"""CPU training: keep freed tensor memory in the process for the next step to reuse.

glibc's malloc serves every block above its mmap threshold (32 MiB at most) with a fresh
``mmap`` and hands it back to the kernel on ``free``. A training step allocates and frees the
same large activations every step (a 2B-row HyCoCLIP tower call has many such blocks), so every
step pays the kernel's page faults and page zeroing for them again. With mmap off for heap
blocks (``M_MMAP_MAX = 0``) and no trimming of the heap's top below 2 GiB
(``M_TRIM_THRESHOLD``), freed blocks stay in the heap and the next step reuses them. Measured
with ``tools/bench.py``'s tiny towers at B = 256 on one thread (docs/benchmarks.md): the HyCoCLIP
step's CPU time 15% lower, CLIP's unchanged within noise. The arithmetic is the same (same
alignment, same kernels): losses are bit-identical.

The same settings as the environment variables ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647``, applied from inside the process because a ``hyvl train``
user should not need to know them. Not a library for allocation: glibc has no other switch for
this and PyTorch's CPU allocator has no caching mode (a caching allocator such as jemalloc or
tcmalloc would do the same, but must be preloaded before the process starts).
"""

from __future__ import annotations

import ctypes
import sys

# glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed blocks for reuse (this process and its later forks).

    Returns whether it was set (False off Linux or without glibc, e.g. musl: nothing changes).
    Call before training on a CPU; GPU memory has its own caching allocator.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
        gnu = libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
    except (OSError, AttributeError):
        return False
    del gnu
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
