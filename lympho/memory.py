"""Keep freed memory in the process while a network runs on the CPU.

glibc serves blocks above its mmap threshold (at most 32 MB) with fresh pages and returns
them to the system when freed. A network's activations are such blocks (about 100 MB a
batch for resnet18 at 64 images), so every batch page-faulted them in again: on this
project's 2-core CPU a quarter of the encoder's time went to the kernel, and keeping the
memory made it about 1.4x faster. The price is that the process holds its peak memory
until it exits, which is what a batch job reuses anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Large blocks come from the heap, and its free top is never given back.
MMAP_THRESHOLD_BYTES = 2**30
TRIM_THRESHOLD_BYTES = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse; True if applied (False on other C libraries)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                     TRIM_THRESHOLD_BYTES))
