"""memory.release_free_memory: freed heap pages scattered between live ones go back."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh process: 400 x 1 MiB from glibc's heap (its mmap threshold raised to 4 MiB,
# as a long run raises it), 9 in 10 freed, the rest still live between them.
_FRAGMENT = """
import ctypes, os
from llama_index.packs.clip_hybrid.memory import release_free_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
MB = 1 << 20
libc.free(libc.malloc(4 * MB))
blocks = [libc.malloc(MB) for _ in range(400)]
for block in blocks:
    ctypes.memset(block, 1, MB)
for i, block in enumerate(blocks):
    if i % 10:
        libc.free(block)
before = rss_mb()
released = release_free_memory()
print(before, rss_mb(), released)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_pages_return_to_the_os() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FRAGMENT], capture_output=True, text=True, check=True
    ).stdout.split()
    before, after, released = int(out[0]), int(out[1]), out[2] == "True"
    assert released
    assert before - after >= 300, (before, after)  # of the ~360 MiB freed


# Six threads each malloc and free; glibc gives each thread an arena of its own unless
# capped. malloc_stats prints one "Arena N:" block per arena to stderr.
_ARENAS = """
import ctypes, sys, threading
from llama_index.packs.clip_hybrid.memory import limit_memory_retention
if sys.argv[1] == "limit":
    print(limit_memory_retention())
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
start = threading.Barrier(6)
def work():
    start.wait()  # all six at once: contention is what makes glibc add arenas
    for _ in range(2000):
        libc.free(libc.malloc(4096))
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
libc.malloc_stats()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_limit_memory_retention_caps_arenas_and_uses_the_system_pool() -> None:
    def arenas(mode: str) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-c", _ARENAS, mode], capture_output=True, text=True, check=True
        )
        return done.stderr.count("Arena "), done.stdout

    capped, said = arenas("limit")
    assert capped <= 2 and "malloc arenas: 2" in said and "pyarrow memory pool: system" in said
    free, _ = arenas("free")
    assert free > 2, free  # the test can tell: without the cap the threads got more
