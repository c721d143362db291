"""The C allocator on a CPU: keep freed memory for the next training step instead of handing it back.

A training step on the CPU allocates and frees activations of tens to hundreds of MiB. glibc's malloc
serves blocks that large with fresh ``mmap`` calls and unmaps them on ``free``, so each step page-faults
and zeroes its whole working set again (BENCHMARKS.md, "Training speed": about a tenth of the step).
Served from malloc's heap and never trimmed, the pages stay mapped and are reused: the process keeps
its peak memory, which every training step reaches anyway. (jemalloc or tcmalloc preloaded do the
same; this needs nothing installed.) Settings in the environment (``GLIBC_TUNABLES``' malloc entries,
``MALLOC_*``) are the user's and are left alone; on a C library without ``mallopt`` nothing changes.
"""

from __future__ import annotations

import ctypes
import os

# mallopt() parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: Free memory at the top of the heap beyond this is returned to the system (mallopt takes a C int).
TRIM_THRESHOLD = 2**31 - 1


def user_set_malloc(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """True when the environment already tunes malloc (then it is not touched)."""
    return "glibc.malloc." in environ.get("GLIBC_TUNABLES", "") or any(k.startswith("MALLOC_") for k in environ)


def keep_freed_memory() -> str:
    """Ask malloc to serve large blocks from its heap and keep what is freed; returns what was done, in words."""
    if user_set_malloc():
        return "malloc left as the environment sets it"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "malloc unchanged (no mallopt in this C library)"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; musl's stub returns 0 and changes nothing.
    if mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
        return "malloc keeps freed memory for reuse"
    return "malloc unchanged (mallopt refused)"
