"""``overwrite=True`` without losing the old index to a rebuild cut short.

The new index is built beside the old one: the pack's image and caption stores and its
BM25 index are pointed at ``<name>_rebuild`` collections (and a ``<path>_rebuild``
folder) for the run. Only when the run has finished are they swapped in: the old
collection is renamed away, the new one renamed to its name, then the old one dropped.
A run cut short (an error, kill -9) leaves the old index serving as it was, and the next
rebuild drops what the cut-short one left. Milvus Lite and servers rename alike.

The swap itself is two renames per collection (~35 ms on Lite). A kill inside it can
leave a collection only under its ``PREVIOUS`` name (the index looks empty); the next
rebuild renames it back before anything else. A search in the rebuilding process during
the swap can fail once with "collection ... does not exist".
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..milvus.collection import VectorCollection

#: What the collections (and the BM25 folder) of a rebuild are named after: suffixes no
#: user's own collection name would carry (they are dropped without asking).
STAGING = "__clip_hybrid_rebuild"
PREVIOUS = "__clip_hybrid_previous"


@contextmanager
def built_beside(
    collections: list[VectorCollection], bm25: Any, *, rebuild: bool = True
) -> Iterator[None]:
    """Point ``collections`` and ``bm25`` (a ``PersistentBM25``) at staging ones for the
    block, and swap them in for the real ones when it ends without an error; on an error,
    point them back. With ``rebuild=False``, the block runs on the real ones."""
    if not rebuild:
        yield
        return
    names = [c.collection_name for c in collections]
    path = bm25.path
    client = collections[0].client
    for name in names:  # a swap cut short (a ~35 ms window) left the old one aside
        if client.has_collection(name + PREVIOUS) and not client.has_collection(name):
            client.rename_collection(name + PREVIOUS, name)
    for collection, name in zip(collections, names, strict=True):
        collection.retarget(name + STAGING)
        collection.drop()  # what a rebuild cut short left
    bm25.retarget(path + STAGING)
    bm25.drop()
    try:
        yield
    except BaseException:
        _point_back(collections, names, bm25, path)
        raise
    for collection, name in zip(collections, names, strict=True):
        built = client.has_collection(name + STAGING)
        if built:
            collection.flush()  # (it names the staging collection still)
        _move_away(client, name)
        if built:
            client.rename_collection(name + STAGING, name)
        if client.has_collection(name + PREVIOUS):
            client.drop_collection(name + PREVIOUS)
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path + STAGING):
        os.replace(path + STAGING, path)
    _point_back(collections, names, bm25, path)


def _move_away(client: Any, name: str) -> None:
    """Rename the old collection out of the way; one whose files cannot be read (the
    reason for many rebuilds) is dropped instead."""
    from pymilvus import MilvusException

    try:
        if client.has_collection(name):
            client.rename_collection(name, name + PREVIOUS)
    except MilvusException:
        client.drop_collection(name)


def _point_back(
    collections: list[VectorCollection], names: list[str], bm25: Any, path: str
) -> None:
    for collection, name in zip(collections, names, strict=True):
        collection.retarget(name)
    bm25.retarget(path)
