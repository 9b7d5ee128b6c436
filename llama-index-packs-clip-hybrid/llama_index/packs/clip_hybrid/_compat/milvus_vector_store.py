"""LlamaIndex's ``MilvusVectorStore`` over a collection it did not write, with its gaps closed.

What ``llama-index-vector-stores-milvus`` 1.2.0 does with the pack's collections, and what
is done about it here (``tests/test_vector_store.py`` shows each upstream failure, so this
can go the day upstream changes):

- **Released collections.** On Milvus Lite a collection reopened by a new process is in
  state "released", and the store never loads one it did not create: every query fails
  ("collection is in state 'released'; call load() before search/get/query").
  :func:`open_vector_store` loads it.
- **No stable node ids.** A row without the store's own ``_node_content`` field comes back
  as a ``TextNode`` with a new random id on every query, so one image is a different node
  each time: fusion, evaluators and deletes by id cannot use it. :class:`RowIdMilvusVectorStore`
  keeps the row's id, and a row with an image ``path`` comes back as an ``ImageNode``
  (``image_path`` set), which LlamaIndex's multimodal components read.
- **The metric.** ``similarity_metric`` (default ``IP``) is used only for indexes the store
  creates; ``IndexManagement.NO_VALIDATION`` keeps it away from the pack's COSINE index,
  so searches use that index's metric and scores are the pack's real cosines.
- **Writes.** The store would insert a node's text embedding into the image collection
  with whatever ``sha256`` its metadata claims, and the pack would reuse that vector for
  the image with those bytes. The store opened here reads only: ``add``, ``delete``,
  ``delete_nodes`` and ``clear`` (and their async forms) raise, naming the pack's way.
"""

from __future__ import annotations

from typing import Any

#: Row fields that are storage details: kept out of what an LLM or an embedder reads.
_SYSTEM_FIELDS = ("sha256", "image_sha256", "folder", "width", "height", "size", "mtime")


def _row_id_store_class() -> type:
    from llama_index.core.schema import ImageNode, TextNode
    from llama_index.vector_stores.milvus import MilvusVectorStore

    class RowIdMilvusVectorStore(MilvusVectorStore):
        """``MilvusVectorStore`` whose nodes for rows it did not write keep the row's id
        (and are ``ImageNode``s when the row has an image ``path``); it reads only."""

        def _read_only(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError(
                f"The pack's {self.collection_name!r} collection is written by the pack: "
                "pack.ingest(...) to add images (CLIP vectors of their pixels, their "
                "captions), pack.delete(...) to remove them; this store reads."
            )

        async def _aread_only(self, *args: Any, **kwargs: Any) -> Any:
            return self._read_only()

        add = delete = delete_nodes = clear = _read_only
        async_add = adelete = adelete_nodes = aclear = _aread_only

        def _parse_from_milvus_results(self, results: list[Any]) -> tuple[Any, Any, Any]:
            nodes, similarities, ids = super()._parse_from_milvus_results(results)
            hits = list(results[0]) if results else []
            for i, hit in enumerate(hits):
                if "_node_content" not in hit["entity"]:
                    nodes[i] = self._row_node(str(ids[i]), hit["entity"])
            return nodes, similarities, ids

        def _row_node(self, row_id: str, entity: dict[str, Any]) -> Any:
            text = entity.get(self.text_key) or ""
            metadata = {
                k: entity.get(k) for k in self.output_fields if k not in (self.text_key, "id")
            }
            hidden = [k for k in metadata if k in _SYSTEM_FIELDS]
            path = metadata.get("path")
            if not path:
                return TextNode(
                    id_=row_id,
                    text=text,
                    metadata=metadata,
                    excluded_llm_metadata_keys=hidden,
                    excluded_embed_metadata_keys=hidden,
                )
            metadata = {"file_path": path, **{k: v for k, v in metadata.items() if k != "path"}}
            return ImageNode(
                id_=row_id,
                text=text,
                image_path=path,
                metadata=metadata,
                excluded_llm_metadata_keys=hidden,
                excluded_embed_metadata_keys=hidden,
            )

    return RowIdMilvusVectorStore


def open_vector_store(
    *,
    uri: str,
    token: str | None,
    collection_name: str,
    embedding_field: str,
    text_key: str,
    output_fields: list[str],
    **kwargs: Any,
) -> Any:
    """A ``MilvusVectorStore`` over an existing collection, loaded, with stable node ids."""
    from llama_index.vector_stores.milvus.base import IndexManagement

    store = _row_id_store_class()(
        uri=uri,
        token=token or "",
        collection_name=collection_name,
        embedding_field=embedding_field,
        text_key=text_key,
        doc_id_field="id",
        output_fields=output_fields,
        index_management=IndexManagement.NO_VALIDATION,
        **kwargs,
    )
    state = store.client.get_load_state(collection_name).get("state")
    if getattr(state, "name", str(state)) != "Loaded":
        store.client.load_collection(collection_name)
    return store
