"""CaptionCache: captions that were paid for, kept on disk by image content.

Keyed by (sha256 of the image bytes, captioner cache key): the cache key hashes the
model, prompt, language and detail, so changing any of them asks again, and changing the
pixels of an image at the same path misses (upstream's IngestionPipeline cache keys on
node metadata and would return the stale caption). Only successes are stored: the next
run asks again for exactly what failed.

SQLite in WAL mode: one file, safe for several threads and processes, nothing to run.
The cache is derived data (it saves API calls, it holds nothing else): a file that SQLite
finds damaged is moved aside with one warning and a new one is started, never an error
that blocks indexing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from .._util import user_cache_dir
from ..redaction import package_logger
from .base import Caption

logger = package_logger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
    sha256 TEXT NOT NULL,
    cache_key TEXT NOT NULL,
    captioner TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created REAL NOT NULL,
    PRIMARY KEY (sha256, cache_key)
)
"""


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/clip-hybrid/captions.sqlite`` (``~/.cache`` by default)."""
    return user_cache_dir() / "captions.sqlite"


def open_cache(path: str | os.PathLike[str] | None) -> CaptionCache:
    """The cache at ``path`` (an error there is the caller's to see), else the default
    one; when the default cannot be opened (a read-only home, as a service account has),
    a cache in memory for this run, with a warning."""
    if path:
        return CaptionCache(path)
    try:
        return CaptionCache(default_cache_path())
    except (OSError, sqlite3.Error) as exc:
        logger.warning(
            "The caption cache %s cannot be opened (%s): captions are kept for this run "
            "only; pass cache_path= a writable file to keep them.",
            default_cache_path(),
            exc,
        )
        return CaptionCache(":memory:")


class CaptionCache:
    """A persistent map (image sha256, captioner cache key) -> caption.

    Args:
        path: The SQLite file (created with its folder); ``":memory:"`` for a cache that
            lives as long as this object.
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = os.fspath(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._lock:
            self._conn = self._guarded(self._open)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        try:
            self._inode = self._path_inode()  # the file this connection reads (if any yet)
            with conn:
                if self.path != ":memory:":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(_SCHEMA)
            self._inode = self._path_inode()
        except BaseException:
            conn.close()
            raise
        return conn

    def _path_inode(self) -> int | None:
        if self.path == ":memory:":
            return None
        try:
            return os.stat(self.path).st_ino
        except FileNotFoundError:
            return None

    def _guarded(self, work: Callable[[], T]) -> T:
        """Run ``work`` (holding the lock); when SQLite says the file is damaged ("file
        is not a database", "database disk image is malformed": plain DatabaseError, not
        its subclasses such as "database is locked"), move the file aside, start an empty
        cache and run ``work`` again."""
        try:
            return work()
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError or self.path == ":memory:":
                raise
            self._recover(exc)
            return work()

    def _recover(self, exc: Exception) -> None:
        """Move the damaged file aside and open a new one, once for all the processes
        sharing this cache: under a lock file, and only if the file at the path is still
        the one this connection found damaged (another process may have recovered it
        already: then this one just opens the new file)."""
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
        with _file_lock(self.path + ".lock"):
            found = self._path_inode()
            if found is not None and found == getattr(self, "_inode", None):
                aside = _unused_name(f"{self.path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(self.path + suffix, aside + suffix)
                logger.warning(
                    "The caption cache %s is damaged (%s): moved to %s and started again; "
                    "captions not in the index will be asked for again.",
                    self.path,
                    exc,
                    aside,
                )
            self._conn = self._open()

    def __repr__(self) -> str:
        return f"CaptionCache({self.path!r})"

    def get_many(self, digests: Iterable[str], cache_key: str) -> dict[str, Caption]:
        """Cached captions for the digests that have one."""
        wanted = sorted(set(digests))

        def read() -> dict[str, Caption]:
            found: dict[str, Caption] = {}
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    "SELECT sha256, text, prompt_tokens, completion_tokens FROM captions "
                    f"WHERE cache_key = ? AND sha256 IN ({marks})",
                    (cache_key, *part),
                ).fetchall()
                for digest, text, prompt_tokens, completion_tokens in rows:
                    found[digest] = Caption(text, prompt_tokens, completion_tokens)
            return found

        with self._lock:
            return self._guarded(read)

    def put(self, digest: str, cache_key: str, captioner: str, caption: Caption) -> None:
        """Store one caption (replacing an older one for the same key)."""
        row = (
            digest,
            cache_key,
            captioner,
            caption.text,
            caption.prompt_tokens,
            caption.completion_tokens,
            time.time(),
        )

        def write() -> None:
            with self._conn:
                self._conn.execute(
                    "INSERT OR REPLACE INTO captions VALUES (?, ?, ?, ?, ?, ?, ?)", row
                )

        with self._lock:
            self._guarded(write)

    def __len__(self) -> int:
        with self._lock:
            return self._guarded(
                lambda: int(self._conn.execute("SELECT count(*) FROM captions").fetchone()[0])
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _unused_name(base: str) -> str:
    """``base``, or ``base-2``, ``base-3``...: the first name no file has."""
    name, n = base, 1
    while os.path.lexists(name):
        n += 1
        name = f"{base}-{n}"
    return name


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """An exclusive lock between processes (POSIX ``flock``; elsewhere none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
