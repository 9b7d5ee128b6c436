"""ImageStore: the Milvus collection of CLIP image vectors (Milvus Lite or a server)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from .._compat import milvus_lite_reads as lite_direct
from .._compat import milvus_lite_search as lite_search
from .locking import LockedClient, ReadWriteLock, database_lock

DEFAULT_URI = "./clip_hybrid.db"
DEFAULT_COLLECTION = "images"
MODEL_PROPERTY = "clip_hybrid.embed_model"

#: Fixed fields; anything else a user puts in metadata goes to Milvus' dynamic field.
BUILTIN_FIELDS = ("path", "sha256", "folder", "category", "width", "height", "size", "mtime")
MAX_PATH_BYTES = 4096  # the path and folder fields' VARCHAR length
_MAX_PATH = MAX_PATH_BYTES


@dataclass(frozen=True)
class IndexConfig:
    """The ANN index and its search parameters."""

    index_type: str
    params: tuple[tuple[str, Any], ...] = ()
    search_params: tuple[tuple[str, Any], ...] = ()


#: Milvus Lite: IVF_FLAT with nprobe = nlist scans every cluster, so top-k is exact
#: (recall 1.0) and the index builds in seconds (HNSW takes ~200 s at 100k, searching by
#: brute force meanwhile). Lite's own per-query walk over every row is gone
#: (lite_search.py), so FAISS is most of a query now: ~25 ms of ~45 at 100k. nlist is
#: Lite's default 128: Lite drops build parameters passed the usual way (it reads only a
#: nested "params" key), so none are passed.
LITE_INDEX = IndexConfig("IVF_FLAT", params=(), search_params=(("nprobe", 128),))

#: Milvus Lite holds the rows written since its last flush in memory (Arrow batches and a
#: Python index entry per key), flushes on its own only at 128 MB (~50k image rows), and
#: reads (get, query, search) go through those rows one by one. Upserting 10k rows as
#: ingestion does, 64 at a time: 661 MB of RSS after the final flush and 72 s without
#: flushes, 502 MB and 26 s with one every 2,048 rows (a store-only /tmp script, both in
#: one run; the numbers for ingestion are in the README). A server manages its own
#: segments: nothing is flushed there until the end of a write.
LITE_FLUSH_ROWS = 2048

#: A Milvus server or cluster: HNSW, the usual choice for CLIP-sized vectors at scale.
SERVER_INDEX = IndexConfig(
    "HNSW", params=(("M", 16), ("efConstruction", 200)), search_params=(("ef", 128),)
)


@dataclass(frozen=True)
class StoredHit:
    id: str
    score: float
    fields: dict[str, Any]


class CollectionMismatchError(ValueError):
    """An existing collection was made for other vectors (dimension or metric)."""


def is_local_uri(uri: str) -> bool:
    return "://" not in uri


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


class ImageStore:
    """One Milvus collection of L2-normalised image vectors, COSINE metric.

    Nothing connects in the constructor. ``uri`` is a local path for Milvus Lite (the
    default, embedded) or ``http(s)://host:19530`` with ``token`` for a Milvus server,
    cluster or Zilliz Cloud: the same code either way.

    Example:
        >>> store = ImageStore(uri="./clip_hybrid.db")
        >>> store.ensure(dim=512)  # doctest: +SKIP
        >>> store.search([0.1] * 512, limit=5)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        uri: str = DEFAULT_URI,
        token: str | None = None,
        collection_name: str = DEFAULT_COLLECTION,
        index: IndexConfig | None = None,
    ) -> None:
        if not uri:
            raise ValueError("uri is empty; pass a local path (Milvus Lite) or http://host:19530.")
        if not collection_name.replace("_", "").isalnum():
            raise ValueError(
                f"collection_name={collection_name!r} must be letters, digits and underscores."
            )
        # A local path is resolved now, as pymilvus resolves it when it connects: the
        # in-process reads (lite_direct) and close() find this database's server by its
        # absolute path, and must not follow a later os.chdir to another database.
        self.uri = os.path.abspath(uri) if is_local_uri(uri) else uri
        self.collection_name = collection_name
        self.index = index or (LITE_INDEX if is_local_uri(uri) else SERVER_INDEX)
        self._token = token
        self._client: Any = None
        self._lock = threading.Lock()
        #: Milvus Lite: reads wait while a write (which may flush) runs; see locking.py.
        self._rw: ReadWriteLock | None = database_lock(self.uri) if is_local_uri(uri) else None
        self._ready = False
        self._dim: int | None = None
        #: Rows (upserted or deleted) after which Milvus Lite is flushed; 0: never.
        self.lite_flush_rows = LITE_FLUSH_ROWS if is_local_uri(uri) else 0
        self._unflushed = 0

    def __repr__(self) -> str:  # never shows the token
        return f"ImageStore(uri={self.uri!r}, collection_name={self.collection_name!r})"

    # -- connection and schema -----------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from pymilvus import MilvusClient

                    if is_local_uri(self.uri):
                        parent = os.path.dirname(os.path.abspath(self.uri))
                        os.makedirs(parent, exist_ok=True)
                        _quiet_lite_noise()
                        lite_search.install()  # see lite_search.py
                    try:
                        client = MilvusClient(uri=self.uri, token=self._token or "")
                        self._client = (
                            client if self._rw is None else LockedClient(client, self._rw)
                        )
                    except Exception as exc:
                        if is_local_uri(self.uri) and lite_database_is_locked(self.uri):
                            raise DatabaseBusyError(self.uri) from exc
                        raise
        return self._client

    def exists(self) -> bool:
        return bool(self.client.has_collection(self.collection_name))

    def _reading(self) -> AbstractContextManager[Any]:
        """Hold off this database's writes (Milvus Lite) for a read outside the client."""
        return self._rw.read() if self._rw is not None else nullcontext()

    @property
    def dim(self) -> int | None:
        """Vector size of the existing collection, or None if there is none."""
        if self._dim is None and self.exists():
            self._dim = self._describe()[0]
        return self._dim

    def ensure(self, dim: int, *, model: str | None = None, overwrite: bool = False) -> None:
        """Create the collection, or check and load the existing one.

        ``model`` names the embedding model; it is recorded with a new collection and
        compared with the one recorded in an existing collection.

        Raises:
            CollectionMismatchError: it exists with another dimension, metric or model
                (it is never dropped unless ``overwrite=True``).
        """
        if self._ready and self._dim == dim and not overwrite:
            self.check_model(model)
            return
        client = self.client
        name = self.collection_name
        if overwrite and client.has_collection(name):
            client.drop_collection(name)
        if client.has_collection(name):
            have_dim, metric = self._describe()
            if have_dim != dim or metric != "COSINE":
                raise CollectionMismatchError(
                    f"Collection {name!r} at {self.uri} holds {have_dim}-dim vectors with "
                    f"metric {metric}, but this model makes {dim}-dim vectors for COSINE; "
                    "pass another collection_name, or overwrite=True to drop it (its data "
                    "is lost)."
                )
            self.check_model(model)
        else:
            self._create(dim)
            if model:
                client.alter_collection_properties(name, properties={MODEL_PROPERTY: model})
        # A collection reopened by a new process starts released (upstream store forgets).
        client.load_collection(name)
        self._dim = dim
        self._ready = True

    @property
    def model(self) -> str | None:
        """The embedding model recorded when the collection was created, if any."""
        if not self.exists():
            return None
        properties = self.client.describe_collection(self.collection_name).get("properties") or {}
        value = properties.get(MODEL_PROPERTY)
        return str(value) if value else None

    def check_model(self, model: str | None) -> None:
        """Raise when the collection was built by another embedding model."""
        recorded = self.model if model else None
        if recorded and recorded != model:
            raise CollectionMismatchError(
                f"Collection {self.collection_name!r} at {self.uri} was built with the model "
                f"{recorded!r}, but this uses {model!r}: vectors of two models are not "
                "comparable; use the same model, another collection_name, or overwrite=True "
                "to rebuild (its data is lost)."
            )

    def open_existing(self) -> bool:
        """Load an existing collection for searching; False when there is none."""
        if self._ready:
            return True
        if not self.exists():
            return False
        self._dim = self._describe()[0]
        self.client.load_collection(self.collection_name)
        self._ready = True
        return True

    def _describe(self) -> tuple[int, str]:
        info = self.client.describe_collection(self.collection_name)
        dim = next(int(f["params"]["dim"]) for f in info["fields"] if f.get("name") == "vector")
        try:
            index = self.client.describe_index(self.collection_name, index_name="vector")
            metric = str(index.get("metric_type", "?"))
        except Exception:  # no index yet
            metric = "?"
        return dim, metric

    def _create(self, dim: int) -> None:
        index = self.client.prepare_index_params()
        index.add_index(
            field_name="vector",
            index_name="vector",
            index_type=self.index.index_type,
            metric_type="COSINE",
            params=dict(self.index.params),
        )
        self._add_indexes(index)
        self.client.create_collection(
            self.collection_name, schema=self._schema(dim), index_params=index
        )

    def _add_indexes(self, index: Any) -> None:
        """More indexes besides the vector's (subclasses with more fields override this)."""

    def _schema(self, dim: int) -> Any:
        """The collection's fields (subclasses for other rows override this)."""
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("path", DataType.VARCHAR, max_length=_MAX_PATH)
        schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("folder", DataType.VARCHAR, max_length=_MAX_PATH)
        schema.add_field("category", DataType.VARCHAR, max_length=512)
        schema.add_field("width", DataType.INT32)
        schema.add_field("height", DataType.INT32)
        schema.add_field("size", DataType.INT64)
        schema.add_field("mtime", DataType.DOUBLE)
        return schema

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        if self.exists():
            self.client.drop_collection(self.collection_name)
        self._ready = False
        self._dim = None

    def close(self) -> None:
        """Disconnect; for Milvus Lite also stop this process's server for the path, which
        frees the database for another process (it stays locked until then)."""
        if self._client is not None:
            self._client.close()
            self._client = None
            self._ready = False
        if self._rw is not None:
            try:
                from milvus_lite.server_manager import server_manager_instance
            except ImportError:  # pragma: no cover - a server-only install
                return
            with self._rw.write():
                server_manager_instance.release_server(self.uri)

    # -- rows --------------------------------------------------------------------------

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.client.upsert(self.collection_name, list(rows))
            self._written(len(rows))

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self.client.delete(self.collection_name, ids=list(ids))
            self._written(len(ids))

    def flush(self) -> None:
        self.client.flush(self.collection_name)
        self._unflushed = 0

    def _written(self, rows: int) -> None:
        self._unflushed += rows
        if self.lite_flush_rows and self._unflushed >= self.lite_flush_rows:
            self.flush()  # see LITE_FLUSH_ROWS

    def count(self) -> int:
        if not self.open_existing():
            return 0
        rows = self.client.query(self.collection_name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def get(self, ids: Sequence[str], fields: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Rows by id (only those that exist)."""
        if not ids:
            return {}
        rows = self.client.get(self.collection_name, ids=list(ids), output_fields=list(fields))
        return {row["id"]: row for row in rows}

    def _lite_collection(self) -> Any | None:
        """Milvus Lite's in-process collection, for reads without gRPC (lite_direct.py);
        None on a server or when pymilvus must answer."""
        if not is_local_uri(self.uri):
            return None
        _ = self.client  # connecting starts this process's Lite server for the path
        return lite_direct.collection(self.uri, self.collection_name)

    def get_hits(self, scored: Sequence[tuple[str, float]], *, filter: str = "") -> list[StoredHit]:
        """Rows for (id, score) pairs, in that order, with the same fields a search returns
        (dynamic metadata included); ids not stored, or not matching ``filter``, are skipped."""
        if not scored or not self.open_existing():
            return []
        ids = [i for i, _ in scored]
        lite = self._lite_collection()
        if lite is not None:
            with self._reading():
                rows = lite_direct.get(
                    lite, ids, filter=filter, output_fields=[*BUILTIN_FIELDS, "$meta"]
                )
        elif filter:
            rows = self.client.query(
                self.collection_name,
                filter=f"id in {_literal(ids)} and ({filter})",
                output_fields=[*BUILTIN_FIELDS, "$meta"],
            )
        else:
            rows = self.client.get(
                self.collection_name, ids=ids, output_fields=[*BUILTIN_FIELDS, "$meta"]
            )
        by_id = {row["id"]: row for row in rows}
        hits = []
        for row_id, score in scored:
            row = by_id.get(row_id)
            if row is not None:
                fields = {k: v for k, v in row.items() if k not in ("id", "$meta")}
                hits.append(StoredHit(id=row_id, score=score, fields=fields))
        return hits

    def vectors_by_sha256(self, digests: Sequence[str]) -> dict[str, list[float]]:
        """An already stored vector for each content hash that is in the collection."""
        if not digests:
            return {}
        expr = f"sha256 in {_literal(sorted(set(digests)))}"
        rows = self.client.query(
            self.collection_name, filter=expr, output_fields=["sha256", "vector"]
        )
        return {row["sha256"]: [float(v) for v in row["vector"]] for row in rows}

    def iter_rows(
        self, fields: Sequence[str], *, filter: str = "", batch_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every row (selected fields), streamed."""
        if not self.open_existing():
            return
        iterator = self.client.query_iterator(
            self.collection_name, batch_size=batch_size, filter=filter, output_fields=list(fields)
        )
        try:
            while True:
                batch = iterator.next()
                if not batch:
                    return
                yield from batch
        finally:
            iterator.close()

    def search(
        self,
        vector: Sequence[float],
        *,
        limit: int,
        filter: str = "",
        output_fields: Sequence[str] = BUILTIN_FIELDS,
    ) -> list[StoredHit]:
        if not self.open_existing():
            return []
        params = dict(self.index.search_params)
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), limit)  # HNSW needs ef >= k
        # No fields wanted: ask for the key alone. An empty list means "every field" to
        # Milvus Lite (3.2.2), vectors included, and "none" to a Milvus server.
        fields = [*output_fields, "$meta"] if output_fields else ["id"]
        lite = self._lite_collection()
        if lite is not None:
            with self._reading():
                found = lite_direct.search(
                    lite,
                    vector,
                    limit=limit,
                    filter=filter,
                    output_fields=fields,
                    search_params=params,
                )
        else:
            found = self.client.search(
                self.collection_name,
                data=[list(vector)],
                limit=limit,
                filter=filter,
                output_fields=fields,
                search_params={"metric_type": "COSINE", "params": params},
                anns_field="vector",
            )[0]
        hits = []
        for hit in found:
            entity = dict(hit.get("entity", {}))
            entity.pop("id", None)
            meta = entity.pop("$meta", None)
            if isinstance(meta, dict):
                entity.update(meta)
            hits.append(StoredHit(id=str(hit["id"]), score=float(hit["distance"]), fields=entity))
        return hits


class _LiteNoiseFilter(logging.Filter):
    """Drops two log records Milvus Lite (3.2.2) causes on every normal operation.

    - pymilvus 2.6 asks the server for a timestamp (AllocTimestamp) in create_collection
      and query_iterator; Milvus Lite does not implement that RPC, so its in-process gRPC
      server logs an ERROR with a NotImplementedError traceback ("Method not implemented!").
    - pymilvus then falls back to a client-side timestamp, which is right for an embedded
      single-process database, and warns "failed to get mvccTs" on every query_iterator.

    Only these records are dropped; delete this when Milvus Lite implements AllocTimestamp.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "mvccTs" in message:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, NotImplementedError) and "Method not implemented" in message)


_LITE_NOISE = _LiteNoiseFilter()


def _quiet_lite_noise() -> None:
    for name in ("grpc._server", "pymilvus.orm.iterator"):
        log = logging.getLogger(name)
        if _LITE_NOISE not in log.filters:
            log.addFilter(_LITE_NOISE)


def _literal(values: Sequence[Any]) -> str:
    import json

    return json.dumps(list(values), ensure_ascii=False)
