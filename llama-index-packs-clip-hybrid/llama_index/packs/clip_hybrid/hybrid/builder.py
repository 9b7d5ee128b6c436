"""RetrieverBuilder: the retrievers of one index, built from its stores, models and options.

What can run depends on the index: the CLIP branch needs image vectors made by a CLIP
model (not the caption-only placeholder), the caption-vector branch a caption collection
with vectors of this embedder, the BM25 branch captions (bm25s beside the data, or Milvus'
own BM25 on the caption collection).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.retrievers.selfhit import QueryImage, SelfHitFilteringRetriever

from ..milvus.captions import CaptionStore
from ..milvus.images import ImageStore
from ..options import (
    BRANCH_BM25,
    BRANCH_CAPTION,
    BRANCH_CLIP,
    BRANCHES,
    DEFAULT_RRF_K,
    OptionError,
    check_branches,
    check_top_k,
    check_weights,
)
from .bm25 import PersistentBM25
from .caption_branches import CaptionBM25Retriever, CaptionVectorRetriever, MilvusBM25Retriever
from .clip_retrievers import ClipImageToImageRetriever, ClipTextToImageRetriever
from .fusion import RRFFusionRetriever
from .nodes import finish_fused

BM25Choice = Literal["auto", "bm25s", "milvus"]


class RetrieverBuilder:
    """Builds text->image, image->image, per-branch and fused retrievers over one index.

    Args:
        images, captions: The image collection and its caption collection.
        embed_model: The image-side model (CLIP), or None when the index has no CLIP.
        caption_embed: Returns the caption embedder for searches (None: no such branch).
        bm25: The persisted bm25s index of the captions.
        bm25_backend: ``auto`` (whichever the caption collection has), ``bm25s``, ``milvus``.
        similarity_top_k, keep_self_hit: Defaults for the retrievers built.
        caption_of: The caption of an image's bytes (stored or cached), for image
            queries in a hybrid search; None: image queries run CLIP alone.
    """

    def __init__(
        self,
        *,
        images: ImageStore,
        captions: CaptionStore,
        embed_model: MultiModalEmbedding | None,
        caption_embed: Callable[[], BaseEmbedding | None],
        bm25: PersistentBM25,
        bm25_backend: BM25Choice = "auto",
        similarity_top_k: int = 5,
        keep_self_hit: bool = False,
        caption_of: Callable[[bytes], str | None] | None = None,
    ) -> None:
        self.images = images
        self.captions = captions
        self.embed_model = embed_model
        self.caption_embed = caption_embed
        self.bm25 = bm25
        self.bm25_backend = bm25_backend
        self.similarity_top_k = check_top_k(similarity_top_k)
        self.keep_self_hit = keep_self_hit
        self.caption_of = caption_of

    def _top_k(self, similarity_top_k: int | None) -> int:
        """The number asked for (0 is an error, not "the default"), else the default."""
        return check_top_k(self.similarity_top_k if similarity_top_k is None else similarity_top_k)

    def uses_milvus_bm25(self) -> bool:
        """Milvus' own BM25 when asked for, or (auto) when the collection has it."""
        if self.bm25_backend == "auto":
            return self.captions.has_milvus_bm25()
        return self.bm25_backend == "milvus"

    def _clip_model(self) -> MultiModalEmbedding:
        if self.embed_model is None:
            raise OptionError(
                "This index is searched without CLIP: use {mode=hybrid} (caption vectors "
                "and BM25), or a CLIP model for text->image and image->image."
            )
        return self.embed_model

    def text_retriever(
        self,
        *,
        similarity_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        read_rows: bool = True,
        captions: bool = True,
    ) -> ClipTextToImageRetriever:
        """CLIP text->image; ``read_rows=False`` returns id-only nodes (for a fusion that
        reads the rows of its final top-k, as :meth:`hybrid_retriever` does); ``captions``:
        each result's text is its image's caption."""
        return ClipTextToImageRetriever(
            store=self.images,
            captions=self.captions if captions else None,
            embed_model=self._clip_model(),
            similarity_top_k=self._top_k(similarity_top_k),
            filters=filters,
            read_rows=read_rows,
        )

    def image_retriever(
        self,
        *,
        similarity_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        keep_self_hit: bool | None = None,
        captions: bool = True,
    ) -> ClipImageToImageRetriever | SelfHitFilteringRetriever:
        """CLIP image->image, the query image itself filtered unless kept."""
        inner = ClipImageToImageRetriever(
            store=self.images,
            captions=self.captions if captions else None,
            embed_model=self._clip_model(),
            similarity_top_k=self._top_k(similarity_top_k),
            filters=filters,
        )
        keep = self.keep_self_hit if keep_self_hit is None else keep_self_hit
        return inner if keep else SelfHitFilteringRetriever(inner)

    def branches(
        self,
        *,
        candidates: int = 50,
        filters: MetadataFilters | None = None,
        query_image: Any = None,
        keep_self_hit: bool | None = None,
        wanted: Sequence[str] = BRANCHES,
        read_rows: bool = True,
    ) -> dict[str, BaseRetriever]:
        """The branches among ``wanted`` that can run now, by name: ``clip`` (text->image,
        or image->image when ``query_image`` is given, self-hit filtered),
        ``caption_vector`` and ``bm25``.

        Each returns full image nodes (path, metadata, content hash, and the image's
        caption as text: an image's node is the same, hash included, in every branch), so
        that any fusion, postprocessor, evaluator or LLM can tell the images apart, merge
        each one and read it. ``read_rows=False``: image nodes with ids and scores only
        (no captions), for a fusion that reads the rows of its final top-k
        (:meth:`hybrid_retriever`)."""
        keep = self.keep_self_hit if keep_self_hit is None else keep_self_hit
        filter_self = query_image is not None and not keep
        out: dict[str, BaseRetriever] = {}
        if BRANCH_CLIP in wanted and self.embed_model is not None and self.images.open_existing():
            if query_image is not None:
                out[BRANCH_CLIP] = self.image_retriever(
                    similarity_top_k=candidates,
                    filters=filters,
                    keep_self_hit=keep,
                    captions=read_rows,
                )
            else:
                out[BRANCH_CLIP] = self.text_retriever(
                    similarity_top_k=candidates,
                    filters=filters,
                    read_rows=read_rows,
                    captions=read_rows,
                )
        common: dict[str, Any] = {
            "images": self.images,
            "similarity_top_k": candidates,
            "filters": filters,
            "read_rows": read_rows or filter_self,
            "caption_text": self.captions if read_rows else None,
        }
        caption_branches: dict[str, BaseRetriever] = {}
        if BRANCH_CAPTION in wanted:
            embed = self.caption_embed()
            if embed is not None:
                caption_branches[BRANCH_CAPTION] = CaptionVectorRetriever(
                    captions=self.captions, embed_model=embed, **common
                )
        if BRANCH_BM25 in wanted:
            if self.uses_milvus_bm25():
                if self.captions.has_milvus_bm25():
                    caption_branches[BRANCH_BM25] = MilvusBM25Retriever(
                        captions=self.captions, **common
                    )
            else:
                index = self.bm25.index()
                if index is not None and len(index):
                    caption_branches[BRANCH_BM25] = CaptionBM25Retriever(
                        index=self.bm25.index, **common
                    )
        for name, retriever in caption_branches.items():
            out[name] = SelfHitFilteringRetriever(retriever) if filter_self else retriever
        return out

    def hybrid_retriever(
        self,
        *,
        similarity_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        rrf_k: float = DEFAULT_RRF_K,
        weights: dict[str, float] | None = None,
        candidates: int = 50,
        query_image: Any = None,
        branches: Sequence[str] | None = None,
        keep_self_hit: bool | None = None,
    ) -> RRFFusionRetriever:
        """CLIP + caption vectors + BM25, fused per image by reciprocal rank (k = 60).

        Branches that cannot run (no captions yet, no caption embedder) are left out;
        ``retriever.branch_names`` says which run; ``branches`` restricts them (for
        example ``("caption_vector", "bm25")`` for captions only)."""
        options: dict[str, Any] = {
            "similarity_top_k": similarity_top_k,
            "filters": filters,
            "rrf_k": rrf_k,
            "weights": weights,
            "candidates": candidates,
            "branches": branches,
            "keep_self_hit": keep_self_hit,
        }
        top_k = self._top_k(similarity_top_k)
        wanted = check_branches(branches) or BRANCHES
        weights = check_weights(weights)
        available = self.branches(
            candidates=max(candidates, top_k),
            filters=filters,
            query_image=query_image,
            keep_self_hit=keep_self_hit,
            wanted=wanted,
            read_rows=False,
        )
        if not available:
            raise OptionError(
                f"No retrieval branch can run on {self.images.uri}: ingest first (captions "
                "need a captioner, and a caption embedder for their vectors)."
            )
        return RRFFusionRetriever(
            available,
            similarity_top_k=top_k,
            rrf_k=rrf_k,
            weights={k: v for k, v in weights.items() if k in available},
            finish=partial(finish_fused, self.images, self.captions),
            image_fusion=None if query_image is not None else partial(self._for_image, options),
        )

    def _for_image(
        self, options: dict[str, Any], bundle: QueryBundle
    ) -> tuple[RRFFusionRetriever, QueryBundle]:
        """The fusion for an image query given to a hybrid retriever built for text: CLIP
        image->image (self-hit filtered unless kept) and the caption branches with the
        query image's caption, with the options the text fusion was built with."""
        query = self.image_query(bundle)
        return self.hybrid_retriever(query_image=query, **options), query

    def image_query(self, bundle: QueryBundle) -> QueryBundle:
        """A copy of an image query bundle with its image's caption (stored with an
        indexed copy, or cached) as text, so the caption branches can take part; without
        a caption only CLIP runs, and without CLIP that is an error naming the fix."""
        image = QueryImage.from_query_bundle(bundle)
        data = b""
        if image is not None:
            data = image.data or (Path(image.path).read_bytes() if image.path else b"")
        caption = (self.caption_of(data) if self.caption_of is not None and data else None) or ""
        if self.embed_model is None and not caption:
            raise OptionError(
                "Without CLIP an image query needs a caption of that image: index and "
                "caption it first, or search with a CLIP model."
            )
        return dataclasses.replace(bundle, query_str=caption)


class LateHybridRetriever(BaseRetriever):
    """The hybrid retriever of an index that had nothing in it when it was asked for
    (``get_modules()`` right after the pack is made): built at each call from what is
    indexed then; before the first ingest a call says to ingest first."""

    def __init__(self, build: Callable[[], RRFFusionRetriever]) -> None:
        super().__init__()
        self._build = build

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._build().retrieve(query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await self._build().aretrieve(query_bundle)
