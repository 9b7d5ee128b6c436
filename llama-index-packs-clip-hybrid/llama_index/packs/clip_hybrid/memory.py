"""Hand freed heap memory back to the operating system during long runs (glibc only).

glibc's malloc serves the many mid-sized buffers of an ingestion (decoded images, tensors
below its mmap threshold, which it raises on its own up to 32 MB) from its heap and keeps
what they free for reuse; over a long run the freed pages scatter between live ones and
stay counted in the process's memory. ``malloc_trim(0)`` returns every whole free page.
Measured on 640 images (`benchmarks/bench_ingest.py --rss` has the 10k numbers): RSS after
ingestion 1,946 MB without, 1,547 MB with a trim per second. Elsewhere (macOS, musl) this
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS; True where that was possible (glibc)."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


#: glibc's mallopt parameter for the most malloc arenas (malloc.h).
_M_ARENA_MAX = -8


def limit_memory_retention() -> list[str]:
    """Make this process keep less freed memory, for long ingestions; returns what changed.

    Process-wide, so the CLI calls it (its process is its own) and a library leaves it
    to the application: call it first thing in a process that will ingest many images.

    - glibc: at most 2 malloc arenas. glibc gives threads arenas of their own (up to 8
      per core) and each keeps what its threads freed; ingestion runs a decode thread,
      torch's and Milvus Lite's threads.
    - pyarrow (Milvus Lite keeps rows, segments and its compaction in Arrow): the system
      allocator instead of mimalloc, which keeps freed memory in its own pools, so that
      :func:`release_free_memory` returns it.
    """
    changed = []
    libc = _glibc()
    if libc is not None and libc.mallopt(_M_ARENA_MAX, 2) == 1:
        changed.append("malloc arenas: 2")
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow comes with Milvus Lite
        return changed
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())
        changed.append("pyarrow memory pool: system")
    return changed
