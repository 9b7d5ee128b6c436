"""ImageStore: the collection of CLIP image vectors, one row per image file or in-memory image."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

from ..options import DEFAULT_COLLECTION, DEFAULT_URI
from .collection import IndexConfig, Schema, VectorCollection
from .database import MilvusDatabase
from .filters import list_literal

#: Fixed fields; anything else a user puts in metadata goes to Milvus' dynamic field.
BUILTIN_FIELDS = ("path", "sha256", "folder", "category", "width", "height", "size", "mtime")
MAX_PATH_BYTES = 4096  # the path and folder fields' VARCHAR length


def _image_fields(schema: Any) -> None:
    from pymilvus import DataType

    schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH_BYTES)
    schema.add_field("sha256", DataType.VARCHAR, max_length=64)
    schema.add_field("folder", DataType.VARCHAR, max_length=MAX_PATH_BYTES)
    schema.add_field("category", DataType.VARCHAR, max_length=512)
    schema.add_field("width", DataType.INT32)
    schema.add_field("height", DataType.INT32)
    schema.add_field("size", DataType.INT64)
    schema.add_field("mtime", DataType.DOUBLE)


IMAGE_SCHEMA = Schema(output_fields=BUILTIN_FIELDS, build=_image_fields)


class ImageStore(VectorCollection):
    """The image collection: a CLIP vector per image, its path, content hash, folder, size
    and any metadata it was given.

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
        super().__init__(
            MilvusDatabase(uri, token), collection_name, schema=IMAGE_SCHEMA, index=index
        )
        #: Held by a pack over a whole ingest: one at a time (it exists before any ingest
        #: does, so two first ingests on two threads share it).
        self.ingesting = threading.RLock()

    def close(self) -> None:
        """Disconnect; for Milvus Lite also stop this process's server for the path, which
        frees the database for another process (it stays locked until then)."""
        super().close()
        self.database.close()

    def vectors_by_sha256(self, digests: Sequence[str]) -> dict[str, list[float]]:
        """An already stored vector for each content hash that is in the collection (a
        damaged one, not a unit vector, is never handed out for reuse)."""
        if not digests:
            return {}
        expr = f"sha256 in {list_literal(sorted(set(digests)))}"
        rows = self.client.query(
            self.collection_name, filter=expr, output_fields=["sha256", "vector"]
        )
        out = {}
        for row in rows:
            vector = [float(v) for v in row["vector"]]
            if abs(math.fsum(v * v for v in vector) - 1.0) < 2e-3:
                out[row["sha256"]] = vector
        return out
