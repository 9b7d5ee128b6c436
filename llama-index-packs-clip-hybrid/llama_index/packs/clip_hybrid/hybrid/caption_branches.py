"""The caption branches of a hybrid search: captions found by vector or BM25, returned as the
images they describe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from .._util import unit_vector
from ..milvus.captions import CaptionStore
from ..milvus.filters import filters_to_expr
from ..milvus.images import ImageStore
from ..options import MAX_SEARCH_LIMIT
from .bm25 import CaptionBM25Index
from .nodes import image_nodes, with_captions


class _CaptionBranch(BaseRetriever):
    """A branch that finds captions and returns the images they describe.

    Subclasses implement :meth:`_scored` (query text -> (image id, score), best first);
    this maps the ids to image nodes (see :func:`_image_nodes`) and runs on a thread in
    async code.

    Args:
        images: The image collection the caption ids point into.
        similarity_top_k: Candidates returned.
        filters: Metadata filters on the images.
        read_rows: Read the image rows now (a self-hit filter needs paths and hashes).
        caption_text: Give each node its image's caption as text (one read per query).
    """

    def __init__(
        self,
        *,
        images: ImageStore,
        similarity_top_k: int = 50,
        filters: MetadataFilters | None = None,
        read_rows: bool = False,
        caption_text: CaptionStore | None = None,
    ) -> None:
        self.images = images
        self.similarity_top_k = similarity_top_k
        self._expr = filters_to_expr(filters)
        self.read_rows = read_rows
        self.caption_text = caption_text
        super().__init__()

    def _scored(self, query: str, limit: int) -> list[tuple[str, float]]:
        raise NotImplementedError

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return with_captions(self.caption_text, self._images(query_bundle))

    def _images(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The top ``similarity_top_k`` images. Captions carry no image metadata, so a
        filter is applied to the images their hits point to: while fewer than k pass and
        the branch has more, it asks again for 4x as many captions (up to Milvus' 16,384)."""
        if not query_bundle.query_str.strip():
            return []
        want = self.similarity_top_k
        limit = want
        while True:
            scored = self._scored(query_bundle.query_str, limit)
            nodes = image_nodes(self.images, scored, self._expr, self.read_rows)
            if len(nodes) >= want or not self._expr or len(scored) < limit:
                return nodes[:want]
            if limit >= MAX_SEARCH_LIMIT:
                return nodes[:want]
            limit = min(limit * 4, MAX_SEARCH_LIMIT)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


class CaptionVectorRetriever(_CaptionBranch):
    """Query text -> caption embedder -> nearest captions -> the images they describe.

    Scores are the cosine between the query and the caption.
    """

    def __init__(self, *, captions: CaptionStore, embed_model: BaseEmbedding, **kwargs: Any):
        self.captions = captions
        self.embed_model = embed_model
        self._vector: tuple[str, list[float]] | None = None
        super().__init__(**kwargs)

    def _scored(self, query: str, limit: int) -> list[tuple[str, float]]:
        if not self.captions.open_existing():
            return []
        cached = self._vector  # asked again for more hits: not embedded (paid) again
        if cached is None or cached[0] != query:
            cached = (query, unit_vector(self.embed_model.get_query_embedding(query)))
            self._vector = cached
        hits = self.captions.search(cached[1], limit=limit, output_fields=())
        return [(h.id, h.score) for h in hits]


class CaptionBM25Retriever(_CaptionBranch):
    """Query text -> BM25 over captions (CJK-aware) -> the images they describe.

    ``index`` is a :class:`CaptionBM25Index`, or a callable asked for the current one on
    every query (``PersistentBM25.index``: a retriever built before an ingestion then
    sees the captions it added). Zero-score results are never returned.
    """

    def __init__(
        self,
        *,
        index: CaptionBM25Index | Callable[[], CaptionBM25Index | None] | None,
        **kwargs: Any,
    ) -> None:
        self._index = index
        super().__init__(**kwargs)

    @property
    def index(self) -> CaptionBM25Index | None:
        return self._index() if callable(self._index) else self._index

    def _scored(self, query: str, limit: int) -> list[tuple[str, float]]:
        index = self.index
        return index.search(query, limit) if index is not None else []


class MilvusBM25Retriever(_CaptionBranch):
    """Query text -> Milvus' own BM25 full-text search on the caption collection (its BM25
    function, jieba analyzer) -> the images the captions describe. For a Milvus server or
    cluster, where an in-process BM25 index does not scale."""

    def __init__(self, *, captions: CaptionStore, **kwargs: Any) -> None:
        self.captions = captions
        super().__init__(**kwargs)

    def _scored(self, query: str, limit: int) -> list[tuple[str, float]]:
        return self.captions.search_bm25(query, limit=limit)
