"""Routing one search: the mode that runs, its retriever and query, and what the result says."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.retrievers.selfhit import (
    ImageQueryBundle,
    SelfHitFilteringRetriever,
    to_query_bundle,
)

from .clip.embedding import FastClipEmbedding
from .clip.no_clip import no_clip_error
from .hybrid.builder import RetrieverBuilder
from .hybrid.fusion import RRFFusionRetriever
from .milvus.collection import CollectionMismatchError
from .options import (
    BRANCH_BM25,
    BRANCH_CAPTION,
    BRANCH_CLIP,
    DEFAULT_RRF_K,
    OptionError,
    check_branches,
    check_mode,
    check_text_query,
    check_top_k,
)
from .results import SearchResult

#: The branches that make ``auto`` a hybrid search for a text query.
CAPTION_BRANCHES = (BRANCH_CAPTION, BRANCH_BM25)


class Route:
    """A routed search: the retriever to run, its query, and what the result will say."""

    def __init__(
        self, retriever: BaseRetriever, bundle: QueryBundle, mode: str, branches: list[str]
    ) -> None:
        self.retriever = retriever
        self.bundle = bundle
        self.mode = mode
        self.branches = branches

    def run(self) -> SearchResult:
        """Run the search: the hits, and the branches that failed while others answered."""
        if isinstance(self.retriever, RRFFusionRetriever):
            return self.result(*self.retriever.retrieve_with_failures(self.bundle))
        return self.result(self.retriever.retrieve(self.bundle), {})

    async def arun(self) -> SearchResult:
        """Async :meth:`run`."""
        if isinstance(self.retriever, RRFFusionRetriever):
            return self.result(*await self.retriever.aretrieve_with_failures(self.bundle))
        return self.result(await self.retriever.aretrieve(self.bundle), {})

    def result(self, hits: list[NodeWithScore], failed: dict[str, str]) -> SearchResult:
        report = (
            self.retriever.last_report
            if isinstance(self.retriever, SelfHitFilteringRetriever)
            else None
        )
        return SearchResult(
            hits=hits,
            mode=self.mode,
            branches=self.branches,
            failed_branches=failed,
            self_hits=report,
        )


def route_search(
    pack: Any,
    query: Any,
    *,
    mode: Any = "auto",
    similarity_top_k: int | None = None,
    filters: MetadataFilters | None = None,
    keep_self_hit: bool | None = None,
    branches: Sequence[str] | None = None,
    rrf_k: float = DEFAULT_RRF_K,
) -> Route:
    """The search ``pack.search(query, ...)`` runs (see ``ClipHybridPack.search``)."""
    mode = check_mode(mode)
    if similarity_top_k is not None:
        check_top_k(similarity_top_k)
    wanted = check_branches(branches)
    if branches is not None and mode not in ("auto", "hybrid"):
        raise OptionError("{branches} applies to {mode=hybrid}.")
    no_clip = pack.has_no_clip or (wanted is not None and BRANCH_CLIP not in wanted)
    if mode == "auto" and (no_clip or wanted is not None):
        mode = "hybrid"  # without CLIP the caption branches are all there is
    if not no_clip:
        check_ready(pack)
    build = pack.retrievers
    bundle: QueryBundle | None = None
    if mode in ("auto", "hybrid"):
        bundle = to_query_bundle(query)
    if mode == "auto" and _is_image(bundle):
        mode = "image"
    elif mode == "auto":  # a text query: hybrid when a caption branch can run
        mode = "hybrid" if _has_caption_branch(build) else "text"
    if mode == "hybrid":
        assert bundle is not None
        query_image = None
        if _is_image(bundle):
            bundle = query_image = build.image_query(bundle)
        else:
            check_text_query(bundle.query_str)
        fusion = build.hybrid_retriever(
            similarity_top_k=similarity_top_k,
            filters=filters,
            query_image=query_image,
            keep_self_hit=keep_self_hit,
            branches=wanted,
            rrf_k=rrf_k,
        )
        return Route(fusion, bundle, "hybrid", list(fusion.branch_names))
    if no_clip:
        raise no_clip_error()
    if bundle is not None:
        pass  # auto: already made
    elif mode == "text":
        if not isinstance(query, (str, QueryBundle)):
            raise OptionError(f"{{mode=text}} needs a string query, got {type(query).__name__}.")
        bundle = query if isinstance(query, QueryBundle) else QueryBundle(query_str=query)
    elif mode == "image" and isinstance(query, str):
        bundle = to_query_bundle(Path(query))
    else:
        bundle = to_query_bundle(query)
    is_image = _is_image(bundle)
    if mode == "image" and not is_image:
        raise OptionError(
            "{mode=image} needs an image: a path, bytes, a PIL image or an image node."
        )
    if is_image:
        retriever: BaseRetriever = build.image_retriever(
            similarity_top_k=similarity_top_k, filters=filters, keep_self_hit=keep_self_hit
        )
        return Route(retriever, bundle, "image", [BRANCH_CLIP])
    check_text_query(bundle.query_str)
    retriever = build.text_retriever(similarity_top_k=similarity_top_k, filters=filters)
    return Route(retriever, bundle, "text", [BRANCH_CLIP])


def _is_image(bundle: QueryBundle | None) -> bool:
    return isinstance(bundle, ImageQueryBundle) or bool(bundle and bundle.image_path)


def _has_caption_branch(build: RetrieverBuilder) -> bool:
    """True when a caption branch (caption vectors or BM25) can run over at least one
    caption: then a text query in ``auto`` mode runs hybrid, else CLIP alone. No caption
    collection costs a stat; an empty one (captions deleted or off) a count."""
    if not build.captions.open_if_present() or build.captions.count() == 0:
        return False
    return bool(build.branches(wanted=CAPTION_BRANCHES, read_rows=False))


def check_ready(pack: Any) -> None:
    """The index's vectors and this pack's CLIP model must be of one model."""
    if not pack.store.open_existing():
        return  # an empty index: searches return nothing
    pack.store.verify()
    model = pack.embed_model
    if pack.model_given or not isinstance(model, FastClipEmbedding):
        pack.store.check_model(model.model_name)
    dim = pack.store.dim
    model_dim = model.embed_dim if isinstance(model, FastClipEmbedding) else None
    if dim is not None and model_dim is not None and dim != model_dim:
        raise CollectionMismatchError(
            f"Collection {pack.store.collection_name!r} at {pack.store.uri} holds {dim}-dim "
            f"vectors but the model {model.model_name!r} makes {model_dim}-dim ones; "
            "search with the model that built the index."
        )
