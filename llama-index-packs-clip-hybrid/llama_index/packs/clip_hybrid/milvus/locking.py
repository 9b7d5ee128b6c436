"""One readers-writer lock per Milvus Lite database: no read runs while a write runs.

Why: Milvus Lite 3.2 flushes by first swapping in an empty memtable and only then, under
its own lock, adding the flushed rows as a new segment (``Collection._trigger_flush``,
step 1 runs outside the lock). A read in that window sees neither copy of the rows: a
search hit could not be read back with ``get`` a moment later
(``test_queries_while_an_ingestion_runs_see_only_committed_images`` failed that way
under load). The flush runs inside a write call (an upsert or delete that fills the
memtable, or ``flush``), so holding reads off while any write runs closes the window for
every read this process makes through our stores, whichever path it takes (pymilvus or
the in-process reads). Reads run concurrently with each other; a waiting writer holds new
readers back so that an ingestion is never starved by a busy search page.

A Milvus server keeps its own consistency: no lock there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class ReadWriteLock:
    """Many readers or one writer, re-entrant per thread (a read inside a read or a write,
    a write inside a write); a read that tries to become a write raises."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._write_depth = 0
        self._waiting_writers = 0
        self._local = threading.local()

    @contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        depth = getattr(self._local, "depth", 0)
        with self._cond:
            if depth == 0 and self._writer != me:
                while self._writer is not None or self._waiting_writers:
                    self._cond.wait()
            self._readers += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._write_depth += 1
            else:
                if getattr(self._local, "depth", 0):
                    raise RuntimeError("a write inside a read of the same thread would deadlock")
                self._waiting_writers += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting_writers -= 1
                self._writer = me
                self._write_depth = 1
        try:
            yield
        finally:
            with self._cond:
                self._write_depth -= 1
                if self._write_depth == 0:
                    self._writer = None
                    self._cond.notify_all()


_registry_lock = threading.Lock()
_locks: dict[str, ReadWriteLock] = {}


def database_lock(path: str) -> ReadWriteLock:
    """The lock of the Milvus Lite database at ``path`` (one per database and process)."""
    key = os.path.abspath(path)
    with _registry_lock:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = ReadWriteLock()
        return lock


#: MilvusClient methods that only read; every other server call counts as a write.
READ_METHODS = frozenset(
    {
        "has_collection",
        "describe_collection",
        "describe_index",
        "list_collections",
        "list_indexes",
        "get_load_state",
        "get_collection_stats",
        "query",
        "get",
        "search",
        "hybrid_search",
    }
)
#: Methods that build request objects locally, without a call to the server.
LOCAL_METHODS = frozenset({"prepare_index_params", "create_schema", "close"})


class LockedClient:
    """A ``MilvusClient`` whose calls hold ``lock``: reads shared, writes exclusive.

    ``query_iterator`` returns an iterator whose ``next()`` calls each hold the read lock
    (not the whole iteration: a caller may write between batches)."""

    def __init__(self, client: Any, lock: ReadWriteLock) -> None:
        self._client = client
        self._lock = lock

    @property
    def client(self) -> Any:
        return self._client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name in LOCAL_METHODS or name.startswith("_"):
            return attr
        lock = self._lock
        if name == "query_iterator":

            def iterate(*args: Any, **kwargs: Any) -> _LockedIterator:
                with lock.read():
                    return _LockedIterator(attr(*args, **kwargs), lock)

            return iterate
        guard = lock.read if name in READ_METHODS else lock.write

        def call(*args: Any, **kwargs: Any) -> Any:
            with guard():
                return attr(*args, **kwargs)

        return call


class _LockedIterator:
    def __init__(self, inner: Any, lock: ReadWriteLock) -> None:
        self._inner = inner
        self._lock = lock

    def next(self) -> Any:
        with self._lock.read():
            return self._inner.next()

    def close(self) -> None:
        self._inner.close()
