"""MilvusDatabase: one connection (a Milvus Lite path or a server URL) its collections share."""

from __future__ import annotations

import os
import threading
import urllib.parse
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ..redaction import register_secret
from .locking import LockedClient, ReadWriteLock, database_lock

#: pymilvus pings its server every 10 s even when idle; Milvus Lite's in-process server
#: answers a stream of pings with "GOAWAY too_many_pings", which gRPC logs. A server in
#: this very process needs no keep-alive: pymilvus' own ``grpc_options`` turn it off.
LITE_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 2**31 - 1, "grpc.keepalive_permit_without_calls": 0}


def is_local_uri(uri: str) -> bool:
    """True for a Milvus Lite path, False for ``http(s)://host:port``."""
    return "://" not in uri


def split_credentials(uri: str) -> tuple[str, str | None]:
    """A server URL without its ``user:password@`` part, and that part as the Milvus
    token it means (``"user:password"``), or None when the URL has none. pymilvus takes
    either; kept in the URL, the password would be in every message naming the database.

    Everything between ``://`` and the last ``@`` is the credentials, a password's
    unescaped ``/``, ``?`` or ``#`` included (URL parsers end the host there and would
    show the rest); a Milvus URL has no ``@`` elsewhere (database names are
    letters, digits and ``_``)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest:
        return uri, None
    credentials, _, host = rest.rpartition("@")
    user, _, password = credentials.partition(":")
    token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    return f"{scheme}://{host}", token


class DatabaseBusyError(RuntimeError):
    """A Milvus Lite database that another process has open."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(
            f"The Milvus Lite database {uri} is open in another process (Milvus Lite allows "
            "one process per database). Stop that process (a running `clip-hybrid serve` or "
            "a notebook, for example), or run a Milvus server and use uri='http://host:19530' "
            "to share one index between processes."
        )


def lite_database_is_locked(uri: str) -> bool:
    """True when another process holds Milvus Lite's lock on this database.

    pymilvus turns milvus-lite's ``DataDirLockedError`` into a bare "Open local milvus
    failed" (pymilvus 2.6 connection_manager), so we ask the lock ourselves: milvus-lite
    holds an exclusive ``flock`` on ``<uri>/LOCK`` while the database is open.
    """
    lock = os.path.join(os.path.abspath(uri), "LOCK")
    if not os.path.isfile(lock):
        return False
    try:
        import fcntl
    except ImportError:  # Windows: milvus-lite locks with msvcrt; we cannot tell
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class MilvusDatabase:
    """The connection to one Milvus database; nothing connects until first use.

    ``uri`` is a local path for Milvus Lite (embedded, one process per database) or
    ``http(s)://host:19530`` with ``token`` for a Milvus server, cluster or Zilliz Cloud.
    On Milvus Lite every call holds the database's readers-writer lock (``locking.py``).
    """

    def __init__(self, uri: str, token: str | None = None) -> None:
        if not uri:
            raise ValueError("uri is empty; pass a local path (Milvus Lite) or http://host:19530.")
        self.is_local = is_local_uri(uri)
        if self.is_local and not uri.endswith(".db"):  # pymilvus refuses it on connect
            raise ValueError(
                f"uri={uri!r}: a Milvus Lite database path must end with .db (for example "
                f"{uri.rstrip('/')}.db); a Milvus server is http://host:19530."
            )
        # A local path is resolved now, as pymilvus resolves it when it connects: the
        # in-process reads and close() find this database's server by its absolute path,
        # and must not follow a later os.chdir to another database.
        if not self.is_local:
            uri, url_token = split_credentials(uri)
            if url_token is not None:
                if token and token != url_token:
                    raise ValueError(
                        "The Milvus uri carries user:password and a different token was given: "
                        "pass the credentials once, as token='user:password'."
                    )
                token = url_token
                register_secret(url_token.partition(":")[2])
        self.uri = os.path.abspath(uri) if self.is_local else uri
        self._token = token
        register_secret(token)
        self._client: Any = None
        self._connect_lock = threading.Lock()
        #: Milvus Lite: reads wait while a write (which may flush) runs.
        self.lock: ReadWriteLock | None = database_lock(self.uri) if self.is_local else None

    @property
    def token(self) -> str | None:
        """The server token (for another client of this database, such as LlamaIndex's
        ``MilvusVectorStore``); registered as a secret, so logs and pages mask it."""
        return self._token

    def __repr__(self) -> str:  # never shows the token (nor a password the uri had)
        return f"MilvusDatabase(uri={self.uri!r})"

    @property
    def client(self) -> Any:
        """The ``MilvusClient`` (Milvus Lite: wrapped so that each call holds the lock)."""
        if self._client is None:
            with self._connect_lock:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        from pymilvus import MilvusClient

        options: dict[str, Any] = {}
        if self.is_local:
            os.makedirs(os.path.dirname(self.uri), exist_ok=True)
            options["grpc_options"] = dict(LITE_GRPC_OPTIONS)
        try:
            client = MilvusClient(uri=self.uri, token=self._token or "", **options)
        except Exception as exc:
            if self.is_local and lite_database_is_locked(self.uri):
                raise DatabaseBusyError(self.uri) from exc
            folder = self.uri if os.path.isdir(self.uri) else os.path.dirname(self.uri)
            if self.is_local and not os.access(folder, os.W_OK):  # pymilvus: "Open ... failed"
                raise PermissionError(
                    f"The Milvus Lite database {self.uri} cannot be opened: {folder} is not "
                    "writable (Milvus Lite keeps a lock and its files there); use a folder "
                    "you can write to."
                ) from exc
            raise
        return client if self.lock is None else LockedClient(client, self.lock)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def reading(self) -> AbstractContextManager[Any]:
        """Hold off this database's writes (Milvus Lite) for a read outside the client."""
        return self.lock.read() if self.lock is not None else nullcontext()

    def lite_collection(self, name: str) -> Any | None:
        """Milvus Lite's in-process collection ``name`` for reads without gRPC
        (``_compat/milvus_lite_reads.py``); None on a server or when pymilvus must answer."""
        if not self.is_local:
            return None
        _ = self.client  # connecting starts this process's Lite server for the path
        from .._compat import milvus_lite_reads

        return milvus_lite_reads.collection(self.uri, name)

    def has_no_collection(self, name: str) -> bool:
        """True when this process's Milvus Lite shows there is no collection ``name``, at
        the cost of a dict lookup (a search that may add captions asks on every query);
        False when unsure (a server, another milvus-lite version): ask pymilvus."""
        from .._compat import milvus_lite_reads

        if not self.is_local or not milvus_lite_reads.active():
            return False
        return self.lite_collection(name) is None

    def close(self) -> None:
        """Disconnect; for Milvus Lite also stop this process's server for the path, which
        frees the database for another process (it stays locked until then)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.lock is not None:
            try:
                from milvus_lite.server_manager import server_manager_instance
            except ImportError:  # pragma: no cover - a server-only install
                return
            with self.lock.write():
                server_manager_instance.release_server(self.uri)
