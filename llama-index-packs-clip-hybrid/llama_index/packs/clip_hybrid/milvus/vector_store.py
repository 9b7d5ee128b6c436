"""The pack's collections as LlamaIndex ``MilvusVectorStore``s, for users' own pipelines."""

from __future__ import annotations

from typing import Any

from .._compat.milvus_vector_store import open_vector_store
from ..options import OptionError
from .collection import VectorCollection
from .database import LITE_GRPC_OPTIONS

#: The vector field of every pack collection (the store's default is ``embedding``;
#: collections built since the first release use ``vector``, and renaming it would strand
#: them, so the store is told the name instead: it costs nothing at query time).
EMBEDDING_FIELD = "vector"
#: The caption collection's text field (the store's default name too).
TEXT_FIELD = "text"


def llama_vector_store(collections: dict[str, VectorCollection], name: str, **kwargs: Any) -> Any:
    """A ``MilvusVectorStore`` over one of the pack's collections (``name``: a key of
    ``collections``): its rows come back as nodes with the row's id (the image id), the
    image's path and metadata, and (the caption collection) the caption as text; scores
    are the collection's cosines. ``kwargs`` go to the store.

    Raises:
        OptionError: ``name`` is not one of the collections.
        ValueError: The collection does not exist yet (ingest first).
    """
    if name not in collections:
        known = " or ".join(repr(k) for k in collections)
        raise OptionError(f"{{collection}} is {known}, got {name!r}.")
    # upstream drops the collection (overwrite) or changes it (its properties) when made
    if kwargs.get("overwrite") or kwargs.get("collection_properties"):
        raise OptionError(
            "The store reads the pack's collection; rebuild it with "
            "pack.ingest(..., {overwrite=True})."
        )
    collection = collections[name]
    if not collection.open_existing():
        raise ValueError(
            f"There is no collection {collection.collection_name!r} at {collection.uri} yet: "
            "ingest images first (the caption collection also needs a captioner)."
        )
    # The pack's search parameters (Milvus Lite: nprobe = nlist, an exact top-k), so the
    # store finds what the pack finds; upstream's default asks Milvus' own (nprobe 8).
    options: dict[str, Any] = {
        "search_config": {"metric_type": "COSINE", "params": dict(collection.index.search_params)}
    }
    if collection.database.is_local:
        options["grpc_options"] = dict(LITE_GRPC_OPTIONS)
    options.update(kwargs)
    return open_vector_store(
        uri=collection.uri,
        token=collection.database.token,
        collection_name=collection.collection_name,
        embedding_field=EMBEDDING_FIELD,
        text_key=TEXT_FIELD,
        output_fields=["path", *(f for f in collection.schema.output_fields if f != "path")],
        **options,
    )
