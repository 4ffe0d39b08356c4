"""Give freed tensor memory back to the OS: a fixed glibc mmap threshold for a train rank.

    return_freed_memory()          # once, at the start of a rank that trains (a no-op off glibc)

glibc serves an allocation of at least M_MMAP_THRESHOLD bytes with its own mmap, which free() unmaps;
smaller ones come from the heap arenas, whose freed space stays resident. The threshold starts at
128 KiB but glibc raises it (up to 32 MiB) each time a mapped block is freed, so after the first
update a model's gradients (9 MiB tensors for a 768-wide Llama layer) are served from the arenas;
gradients freed by zero_grad(set_to_none=True), re-allocated by the next backward, plus the
transient buffers of publishing and the all-reduce then fragment the arenas and the resident set
creeps upwards step after step (+700 MiB on the 113M-parameter model of docs/performance.md).
Setting the threshold explicitly turns that adjustment off: every tensor of THRESHOLD_BYTES or more
is mapped and unmapped on its own. Numerics are untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
THRESHOLD_BYTES = 1 << 20


def return_freed_memory(threshold_bytes: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold_bytes`. Returns whether it was set (False off glibc)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes))
