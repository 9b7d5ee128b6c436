"""A damaged Milvus Lite database, said as such: which file or rows, and how to recover.

See ``_compat/milvus_lite_files.py`` for what damage Milvus Lite itself lets through. A
collection that cannot load names its unreadable data files; :func:`verify` (run before
searches) refuses a collection whose vectors are not unit vectors or whose manifest was
replaced by the one before; :func:`damaged_ids` lets re-indexing repair such rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._compat.milvus_lite_files import damaged_data_files, damaged_manifest, damaged_vectors
from ..options import ClipHybridError


class DamagedIndexError(ClipHybridError, RuntimeError):
    """Files of a Milvus Lite database were changed outside it: which, and how to recover."""


@contextmanager
def explaining_damage(collection: Any) -> Iterator[None]:
    """Run a read of the collection; if Milvus fails on damaged files, name them and the fix
    (a :class:`DamagedIndexError`) instead of its bare message."""
    from pymilvus import MilvusException

    try:
        yield
    except MilvusException as exc:
        local = collection.database.is_local
        damaged = damaged_data_files(collection.uri, collection.collection_name) if local else []
        if not damaged:
            raise
        raise DamagedIndexError(
            f"The index at {collection.uri} is damaged: {', '.join(damaged)} cannot be read "
            "(changed outside clip-hybrid). Rebuild it from your images: clip-hybrid "
            f"index FOLDER --db {collection.uri} {{overwrite=True}} (captions come back from "
            "the caption cache, without API calls)."
        ) from exc


def damaged_ids(collection: Any) -> list[Any]:
    """Keys of rows whose stored vector is not a finite unit vector (a Milvus Lite data
    file changed outside it): re-indexing re-embeds them. [] on a server."""
    lite = collection._lite() if collection.open_existing() else None
    if lite is None:
        return []
    with collection.database.reading():
        return [key for keys in damaged_vectors(lite).values() for key in keys]


def verify(collection: Any) -> None:
    """Refuse to serve a damaged Milvus Lite collection, naming the damage and the fix.

    Raises:
        DamagedIndexError: vectors that are not unit vectors, or a manifest that Milvus
            Lite could not read (it fell back to the one before, so rows are missing).
    """
    local = collection.database.is_local
    manifest = damaged_manifest(collection.uri, collection.collection_name) if local else None
    if manifest is not None:
        raise DamagedIndexError(
            f"The index at {collection.uri} is damaged: {manifest} is not valid JSON, and Milvus "
            "Lite fell back to the manifest before it, so the images indexed last are "
            f"missing. Index your folders again to restore them: clip-hybrid index "
            f"FOLDER --db {collection.uri}"
        )
    lite = collection._lite() if collection.open_existing() else None
    if lite is None:
        return
    with collection.database.reading():
        damaged = damaged_vectors(lite)
    if damaged:
        rows = sum(len(keys) for keys in damaged.values())
        raise DamagedIndexError(
            f"The index at {collection.uri} is damaged: {rows} row(s) of "
            f"{collection.collection_name!r} hold vectors that are not unit vectors (in "
            f"{', '.join(damaged)}): its files were changed outside clip-hybrid. Index "
            f"your folders again to repair them: clip-hybrid index FOLDER --db {collection.uri}"
        )
