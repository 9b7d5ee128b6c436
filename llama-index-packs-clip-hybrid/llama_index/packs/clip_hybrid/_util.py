"""Small shared helpers: batching, background prefetch, unit vectors, the user cache folder,
the cores a process may use, whether two paths hold the same file."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter), lazily."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def prefetch(batches: Iterator[list[Any]], prepare: Callable[[list[Any]], Any]) -> Iterator[Any]:
    """Yield ``prepare(batch)`` for each batch, preparing the next one in the background."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-prefetch") as pool:
        iterator = iter(batches)
        first = next(iterator, None)
        if first is None:
            return
        pending = pool.submit(prepare, first)
        for batch in iterator:
            ready = pending.result()
            pending = pool.submit(prepare, batch)
            yield ready
        yield pending.result()


def unit_vector(vector: list[float]) -> list[float]:
    """``vector`` scaled to length 1 (for embedders that do not normalise)."""
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [v / norm for v in vector]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/clip-hybrid`` (``~/.cache/clip-hybrid`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clip-hybrid"


def available_cores() -> int:
    """The CPU cores this process may use: its affinity mask, capped by a cgroup v2 CPU
    quota (a container limited to 2 CPUs on a 64-core host gets 2)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def same_file_content(first: str, second: str) -> bool:
    """True when both paths are files with the same bytes (the same file, or a copy)."""
    import filecmp

    if not (os.path.isfile(first) and os.path.isfile(second)):
        return False
    return os.path.samefile(first, second) or filecmp.cmp(first, second, shallow=False)
