"""Hand a worker's freed memory back to the operating system after a large document.

When an ingestion job ends, CPython frees the document's text, blocks, chunks and vectors,
but glibc's allocator keeps the freed pages in its heaps for reuse (large blocks come from
the heap, not mmap, once a process has freed a few: glibc raises its mmap threshold as it
goes). A worker that read one 19 MB document so stayed gigabytes larger until it exited.
``malloc_trim(0)`` returns every free page, wherever it sits in the heaps; ``gc.collect()``
first frees what only reference cycles still hold (an exception's traceback and frames).
Both cost time on a big heap, so the pipeline calls this only after a large document.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
from collections.abc import Callable

# Documents at least this large (bytes read, or characters parsed) are followed by a release.
RELEASE_AFTER = 1 << 20


def release_memory() -> bool:
    """Collect garbage, then return free heap pages to the OS; False where libc cannot."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    return bool(trim(0))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    # glibc only: macOS and Windows return freed memory themselves, and musl has no
    # malloc_trim (its allocator returns large frees at once).
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim
