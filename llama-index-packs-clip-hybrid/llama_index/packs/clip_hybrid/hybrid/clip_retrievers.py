"""Text->image and image->image retrievers over an ImageStore."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.retrievers.selfhit import QueryImage

from .._util import unit_vector
from ..milvus.captions import CaptionStore
from ..milvus.filters import filters_to_expr
from ..milvus.images import BUILTIN_FIELDS, ImageStore
from .nodes import hit_to_node, id_only_node, with_captions


class _StoreRetriever(BaseRetriever):
    def __init__(
        self,
        *,
        store: ImageStore,
        embed_model: MultiModalEmbedding,
        similarity_top_k: int = 5,
        filters: MetadataFilters | None = None,
        callback_manager: CallbackManager | None = None,
        read_rows: bool = True,
        captions: CaptionStore | None = None,
    ) -> None:
        if similarity_top_k < 1:
            raise ValueError(f"similarity_top_k={similarity_top_k} must be >= 1.")
        self.store = store
        self.embed_model = embed_model
        self.similarity_top_k = similarity_top_k
        self.filters = filters
        self._expr = filters_to_expr(filters)  # validates the filters now
        self.read_rows = read_rows
        self.captions = captions
        super().__init__(callback_manager=callback_manager)

    def _search(self, vector: list[float]) -> list[NodeWithScore]:
        fields = BUILTIN_FIELDS if self.read_rows else ()
        hits = self.store.search(
            vector, limit=self.similarity_top_k, filter=self._expr, output_fields=fields
        )
        if not self.read_rows:  # ids and scores: a fusion reads the rows of its top-k only
            return [id_only_node(h.id, h.score) for h in hits]
        return with_captions(self.captions, [hit_to_node(hit) for hit in hits])

    async def _asearch(self, vector: list[float]) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._search, vector)


class ClipTextToImageRetriever(_StoreRetriever):
    """Text query -> CLIP text vector -> nearest images, scored by real cosine.

    Example:
        >>> retriever = ClipTextToImageRetriever(store=store, embed_model=clip)  # doctest: +SKIP
        >>> retriever.retrieve("system architecture diagram")  # doctest: +SKIP
    """

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if not query_bundle.query_str.strip():
            raise ValueError("The text query is empty; type something to search for.")
        vector = query_bundle.embedding or self.embed_model.get_query_embedding(
            query_bundle.query_str
        )
        return self._search(vector)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if not query_bundle.query_str.strip():
            raise ValueError("The text query is empty; type something to search for.")
        vector = query_bundle.embedding or await self.embed_model.aget_query_embedding(
            query_bundle.query_str
        )
        return await self._asearch(vector)


class ClipImageToImageRetriever(_StoreRetriever):
    """Image query (``QueryBundle.image_path``) -> CLIP image vector -> nearest images.

    Returns the query image itself when it is indexed (cosine 1.0): wrap it in
    ``SelfHitFilteringRetriever`` (``ClipHybridPack`` does) to drop it.
    """

    def _image_of(self, query_bundle: QueryBundle) -> Any:
        image = QueryImage.from_query_bundle(query_bundle)
        if image is None:
            raise ValueError(
                "An image query needs QueryBundle.image_path (or a path, bytes or PIL image "
                "through SelfHitFilteringRetriever)."
            )
        return image.path if image.path else image.data

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        source = self._image_of(query_bundle)
        vector = self.embed_model.get_image_embedding(_as_image_type(source))
        return self._search(unit_vector(vector))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        source = self._image_of(query_bundle)
        vector = await self.embed_model.aget_image_embedding(_as_image_type(source))
        return await self._asearch(unit_vector(vector))


def _as_image_type(source: Any) -> Any:
    import io

    return io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
