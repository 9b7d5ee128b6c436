"""VectorCollection: one Milvus collection of unit vectors (COSINE) and the fields of a schema.

The generic part of the image and caption stores: create or open (checking the vector
size, the metric and the model that made the vectors), write, read rows, iterate, search.
What a row holds is the :class:`Schema` the store composes in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .._compat import milvus_lite_reads
from .._util import chunks
from ..options import ClipHybridError
from .database import MilvusDatabase
from .filters import list_literal
from .indexes import LITE_FLUSH_ROWS, LITE_INDEX, SERVER_INDEX, IndexConfig
from .integrity import damaged_ids, explaining_damage, verify
from .models import model_mismatch

#: The collection property that names the model of its vectors.
MODEL_PROPERTY = "clip_hybrid.embed_model"

#: The vector of a row that has none of its own (images without CLIP, captions without
#: an embedder): Milvus needs a vector field, and a constant one is never searched.
PLACEHOLDER = [1.0, 0.0]


@dataclass(frozen=True)
class StoredHit:
    id: str
    score: float
    fields: dict[str, Any]


class CollectionMismatchError(ClipHybridError, ValueError):
    """An existing collection was made for other vectors (dimension, metric or model)."""


@dataclass(frozen=True)
class Schema:
    """What a collection's rows hold besides ``id`` and ``vector``.

    ``build(schema, dim)`` adds the other fields to a pymilvus schema that already has
    those two; ``add_indexes(index_params)`` adds indexes besides the vector's;
    ``output_fields`` are the fields a search returns by default."""

    output_fields: tuple[str, ...]
    build: Callable[[Any], None]
    add_indexes: Callable[[Any], None] = lambda index_params: None


class VectorCollection:
    """A Milvus collection of L2-normalised vectors (COSINE) with a :class:`Schema`.

    Nothing connects in the constructor; the collection opens on first use.
    """

    model_option = "clip_model"  #: the pack's argument that picks these vectors' model

    def __init__(
        self,
        database: MilvusDatabase,
        name: str,
        *,
        schema: Schema,
        index: IndexConfig | None = None,
    ) -> None:
        if not name.replace("_", "").isalnum():
            raise ValueError(f"collection_name={name!r} must be letters, digits and underscores.")
        self.database = database
        self.collection_name = name
        self.schema = schema
        self.index = index or (LITE_INDEX if database.is_local else SERVER_INDEX)
        self._ready = False
        self.writes = 0  # rows this process wrote or deleted here ("did it change?")
        self._verified = False
        self._dim: int | None = None
        self.lite_flush_rows = LITE_FLUSH_ROWS if database.is_local else 0  # 0: never
        self._unflushed = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(uri={self.uri!r}, collection_name={self.collection_name!r})"

    @property
    def uri(self) -> str:
        return self.database.uri

    @property
    def client(self) -> Any:
        return self.database.client

    # -- existence and schema -----------------------------------------------------------

    def exists(self) -> bool:
        with explaining_damage(self):  # pymilvus asks DescribeCollection, which reads files
            return bool(self.client.has_collection(self.collection_name))

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
            with explaining_damage(self):
                have_dim, metric = self._describe()
            if have_dim != dim or metric != "COSINE":
                raise CollectionMismatchError(
                    f"Collection {name!r} at {self.uri} holds {have_dim}-dim vectors with "
                    f"metric {metric}, but this model makes {dim}-dim vectors for COSINE; "
                    "pass another {collection_name}, or {overwrite=True} to drop it (its data "
                    "is lost)."
                )
            self.check_model(model)
        else:
            self._create(dim)
            if model:
                client.alter_collection_properties(name, properties={MODEL_PROPERTY: model})
        # A collection reopened by a new process starts released (upstream store forgets).
        with explaining_damage(self):
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
        why = model_mismatch(self.model if model else None, model, self.model_option)
        if why:
            raise CollectionMismatchError(
                f"Collection {self.collection_name!r} at {self.uri} {why}"
            )

    def open_existing(self) -> bool:
        """Load an existing collection for searching; False when there is none.

        Raises:
            DamagedIndexError: a data file of the collection cannot be read."""
        if self._ready:
            return True
        if not self.exists():
            return False
        with explaining_damage(self):
            self._dim = self._describe()[0]
            self.client.load_collection(self.collection_name)
        self._ready = True
        return True

    def open_if_present(self) -> bool:
        """:meth:`open_existing`, with no round trip when Milvus Lite shows there is none."""
        if not self._ready and self.database.has_no_collection(self.collection_name):
            return False
        return self.open_existing()

    def damaged_ids(self) -> list[Any]:
        """Keys of rows whose stored vector is not a finite unit vector (see
        :mod:`.integrity`): re-indexing re-embeds them."""
        return damaged_ids(self)

    def verify(self) -> None:
        """Refuse to serve a damaged Milvus Lite collection (see :mod:`.integrity`); once
        per store object."""
        if not self._verified:
            verify(self)
            self._verified = True

    def field_names(self) -> list[str]:
        """The names of the existing collection's fields ([] without a collection)."""
        if not self.exists():
            return []
        return [f["name"] for f in self.client.describe_collection(self.collection_name)["fields"]]

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
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        self.schema.build(schema)
        index = self.client.prepare_index_params()
        index.add_index(
            field_name="vector",
            index_name="vector",
            index_type=self.index.index_type,
            metric_type="COSINE",
            params=dict(self.index.params),
        )
        self.schema.add_indexes(index)
        if not self.database.is_local:
            self.client.create_collection(self.collection_name, schema=schema, index_params=index)
            return
        # Milvus Lite builds an index on an empty collection at once. pymilvus would then
        # poll for it (0.5 s at least) through an RPC Lite lacks (AllocTimestamp, which Lite
        # logs as an error with a traceback): create, then index without waiting.
        self.client.create_collection(self.collection_name, schema=schema)
        self.client.create_index(self.collection_name, index, sync=False)

    def drop(self) -> None:
        """Delete the collection and everything in it (a damaged one too)."""
        from pymilvus import MilvusException

        try:
            present = bool(self.client.has_collection(self.collection_name))
        except MilvusException:  # its files cannot be read: dropping is the way out
            present = True
        if present:
            self.client.drop_collection(self.collection_name)
        self._ready = False
        self._dim = None

    def close(self) -> None:
        """Forget the loaded state (the database connection is closed by its owner)."""
        self._ready = False

    def retarget(self, name: str) -> None:
        """Name collection ``name`` from now on (a rebuild's, then the real one again)."""
        self.collection_name, self._ready, self._dim, self._verified = name, False, None, False

    # -- rows --------------------------------------------------------------------------

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.client.upsert(self.collection_name, list(rows))
            self._written(len(rows))

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            # Not ``ids=``: pymilvus quotes those itself, and an id with a newline fails.
            self.client.delete(self.collection_name, filter=f"id in {list_literal(ids)}")
            self._written(len(ids))

    def flush(self) -> None:
        self.client.flush(self.collection_name)
        self._unflushed = 0

    def _written(self, rows: int) -> None:
        self.writes += rows
        self._unflushed += rows
        if self.lite_flush_rows and self._unflushed >= self.lite_flush_rows:
            self.flush()  # see LITE_FLUSH_ROWS

    def count(self) -> int:
        if not self.open_existing():
            return 0
        rows = self.client.query(self.collection_name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def get(self, ids: Sequence[str], fields: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Rows by id (only those that exist); ids quoted, unlike pymilvus' ``get``."""
        if not ids or not self.open_existing():  # loads a released collection first
            return {}
        rows = self.client.query(
            self.collection_name, filter=f"id in {list_literal(ids)}", output_fields=list(fields)
        )
        return {row["id"]: row for row in rows}

    def _lite(self) -> Any | None:
        """Milvus Lite's in-process collection for reads without gRPC, or None."""
        return self.database.lite_collection(self.collection_name)

    def get_hits(self, scored: Sequence[tuple[str, float]], *, filter: str = "") -> list[StoredHit]:
        """Rows for (id, score) pairs, in that order, with the fields a search returns
        (dynamic metadata included); ids not stored, or not matching ``filter``, are skipped."""
        if not scored or not self.open_existing():
            return []
        ids = [i for i, _ in scored]
        fields = [*self.schema.output_fields, "$meta"]
        # Our quoting, not pymilvus' ``get(ids=...)``: an id with a newline fails there.
        expr = f"id in {list_literal(ids)}" + (f" and ({filter})" if filter else "")
        lite = self._lite()
        if lite is not None:
            with self.database.reading():
                rows = milvus_lite_reads.get(lite, ids, expr=filter and expr, output_fields=fields)
        else:
            rows = self.client.query(self.collection_name, filter=expr, output_fields=fields)
        by_id = {row["id"]: row for row in rows}
        hits = []
        for row_id, score in scored:
            row = by_id.get(row_id)
            if row is not None:
                found = {k: v for k, v in row.items() if k not in ("id", "$meta")}
                hits.append(StoredHit(id=row_id, score=score, fields=found))
        return hits

    def iter_rows(
        self, fields: Sequence[str], *, filter: str = "", batch_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every row (selected fields and ``id``), streamed in batches."""
        if not self.open_existing():
            return
        lite = self._lite()
        if lite is not None:  # in process: the keys, then their rows a batch at a time
            with self.database.reading():
                ids = milvus_lite_reads.ids(lite, filter=filter)
            for batch in chunks(ids, batch_size):
                with self.database.reading():
                    yield from milvus_lite_reads.get(
                        lite, batch, expr="", output_fields=list(fields)
                    )
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
        output_fields: Sequence[str] | None = None,
    ) -> list[StoredHit]:
        """The ``limit`` nearest rows (cosine, best first) with ``output_fields`` (default:
        the schema's, dynamic metadata included); ``()`` for ids and scores only."""
        if not self.open_existing():
            return []
        wanted = self.schema.output_fields if output_fields is None else tuple(output_fields)
        params = dict(self.index.search_params)
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), limit)  # HNSW needs ef >= k
        # No fields wanted: ask for the key alone. An empty list means "every field" to
        # Milvus Lite (3.2.2), vectors included, and "none" to a Milvus server.
        fields = [*wanted, "$meta"] if wanted else ["id"]
        lite = self._lite()
        if lite is not None:
            with self.database.reading():
                found = milvus_lite_reads.search(
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
