"""Hybrid retrieval: CLIP, caption vectors and BM25 fused per image with RRF.

Every branch returns *image* nodes (a caption hit is mapped to the image it describes)
and :class:`RRFFusionRetriever`, a LlamaIndex ``QueryFusionRetriever`` in
``reciprocal_rerank`` mode, fuses them. What it changes in upstream's fusion, and why:

- Results are merged by node id, not ``node.hash``: an ``ImageNode``'s hash covers only
  its image, path, url and text, so every image stored without a path has the same hash
  and upstream would fuse them all into one result.
- ``k`` (default 60, upstream's constant) and per-branch weights (ignored upstream in RRF
  mode, #21444) are options; with the defaults the scores are upstream's exactly:
  sum over branches of 1 / (k + rank), rank 0-based, each branch sorted by its own score.
- Each fused node keeps, in ``metadata["hybrid"]``, its rank and score in every branch
  that found it (the CLIP cosine stays visible) and its fused RRF score.
- No LLM: ``num_queries=1`` and a ``MockLLM``, so it constructs and runs without an
  OpenAI key (upstream resolves ``Settings.llm`` in its constructor). Branches run
  concurrently, each on a worker thread: ``retrieve`` submits them to the retriever's own
  thread pool (upstream runs a new asyncio loop per query for this, ~2.7 ms of Python per
  hybrid query here, and needs nest_asyncio inside a running loop); ``aretrieve`` gathers
  them on the caller's loop, each sent to a thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.retrievers.selfhit import CONTENT_HASH_METADATA_KEY

from .._util import unit_vector
from ..milvus.captions import CaptionStore
from ..milvus.filters import filters_to_expr
from ..milvus.images import ImageStore
from .bm25 import CaptionBM25Index
from .clip_retrievers import hit_to_node

#: The most hits one Milvus search returns (its topk limit).
MAX_SEARCH_LIMIT = 16384

#: Node metadata key holding the per-branch ranks and scores and the fused score.
HYBRID_METADATA_KEY = "hybrid"
DEFAULT_RRF_K = 60.0

BRANCH_CLIP = "clip"
BRANCH_CAPTION = "caption_vector"
BRANCH_BM25 = "bm25"


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
    """

    def __init__(
        self,
        *,
        images: ImageStore,
        similarity_top_k: int = 50,
        filters: MetadataFilters | None = None,
        read_rows: bool = False,
    ) -> None:
        self.images = images
        self.similarity_top_k = similarity_top_k
        self._expr = filters_to_expr(filters)
        self.read_rows = read_rows
        super().__init__()

    def _scored(self, query: str, limit: int) -> list[tuple[str, float]]:
        raise NotImplementedError

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The top ``similarity_top_k`` images. Captions carry no image metadata, so a
        filter is applied to the images their hits point to: while fewer than k pass and
        the branch has more, it asks again for 4x as many captions (up to Milvus' 16,384)."""
        if not query_bundle.query_str.strip():
            return []
        want = self.similarity_top_k
        limit = want
        while True:
            scored = self._scored(query_bundle.query_str, limit)
            nodes = _image_nodes(self.images, scored, self._expr, self.read_rows)
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

    ``index`` is a :class:`CaptionBM25Index` or a callable returning one (loaded lazily).
    Zero-score results are never returned.
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
        if callable(self._index):
            self._index = self._index()
        return self._index

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


def _image_nodes(
    images: ImageStore, scored: list[tuple[str, float]], expr: str, read_rows: bool = False
) -> list[NodeWithScore]:
    """Image nodes for caption hits. With a filter, or ``read_rows`` (a self-hit filter
    needs each node's path and content hash), the image rows are read now; otherwise the
    nodes carry only the image id, and the fusion reads the rows of the final top-k only
    (:func:`hydrate`): one small read instead of one per branch of 50 candidates each."""
    if expr or read_rows:
        return [hit_to_node(h) for h in images.get_hits(scored, filter=expr)]
    return [NodeWithScore(node=ImageNode(id_=image_id), score=score) for image_id, score in scored]


def hydrate(images: ImageStore, hits: list[NodeWithScore]) -> list[NodeWithScore]:
    """Replace id-only image nodes by full ones from the image collection (keeping the
    fused score and ``metadata["hybrid"]``); ids no longer stored are dropped."""
    bare = [h.node.node_id for h in hits if CONTENT_HASH_METADATA_KEY not in h.node.metadata]
    if not bare:
        return hits
    rows = {h.id: h for h in images.get_hits([(i, 0.0) for i in bare])}
    out = []
    for hit in hits:
        node_id = hit.node.node_id
        if node_id not in bare:
            out.append(hit)
        elif node_id in rows:
            full = hit_to_node(rows[node_id])
            info = hit.node.metadata.get(HYBRID_METADATA_KEY)
            if info is not None:
                full.node.metadata[HYBRID_METADATA_KEY] = info
                full.node.excluded_llm_metadata_keys.append(HYBRID_METADATA_KEY)
                full.node.excluded_embed_metadata_keys.append(HYBRID_METADATA_KEY)
            full.score = hit.score
            out.append(full)
    return out


class _OnThread(BaseRetriever):
    """Runs a branch's sync retrieve on a worker thread, so branches overlap even when
    their async path blocks (CLIP's async embedding runs the forward pass inline)."""

    def __init__(self, inner: BaseRetriever) -> None:
        self.inner = inner
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.inner.retrieve(query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self.inner.retrieve, query_bundle)


def _inner(retriever: BaseRetriever) -> BaseRetriever:
    return retriever.inner if isinstance(retriever, _OnThread) else retriever


class RRFFusionRetriever(QueryFusionRetriever):
    """``QueryFusionRetriever`` (reciprocal rank) over named branches, merged per node id.

    Args:
        branches: Branch name -> retriever; each should return image nodes.
        similarity_top_k: Fused results returned.
        rrf_k: The RRF constant (upstream: 60).
        weights: Branch name -> weight (default 1.0 each; upstream ignores weights in RRF).
        use_async: Run branches concurrently (default).
        finish: Applied to the fused top-k (the pack reads image rows for id-only nodes).

    Example:
        >>> fusion = RRFFusionRetriever({"clip": clip, "bm25": bm25})  # doctest: +SKIP
        >>> hits = fusion.retrieve("系统架构图")  # doctest: +SKIP
        >>> hits[0].node.metadata["hybrid"]  # doctest: +SKIP
        {'rrf': 0.0328, 'branches': {'clip': {'rank': 2, 'score': 0.27}, 'bm25': ...}}
    """

    def __init__(
        self,
        branches: dict[str, BaseRetriever],
        *,
        similarity_top_k: int = 5,
        rrf_k: float = DEFAULT_RRF_K,
        weights: dict[str, float] | None = None,
        use_async: bool = True,
        finish: Callable[[list[NodeWithScore]], list[NodeWithScore]] | None = None,
    ) -> None:
        if not branches:
            raise ValueError("Hybrid retrieval needs at least one branch.")
        if not (math.isfinite(rrf_k) and rrf_k > 0):
            raise ValueError(f"rrf_k={rrf_k} must be a finite number > 0.")
        unknown = set(weights or {}) - set(branches)
        if unknown:
            raise ValueError(f"weights for unknown branches: {sorted(unknown)}")
        bad = {n: w for n, w in (weights or {}).items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"weights must be finite numbers >= 0: {bad}")
        names = list(branches)
        super().__init__(
            retrievers=[_OnThread(branches[n]) for n in names],
            llm=MockLLM(),
            mode="reciprocal_rerank",  # type: ignore[arg-type]
            similarity_top_k=similarity_top_k,
            num_queries=1,
            use_async=use_async,
        )
        self.branch_names = names
        self.rrf_k = float(rrf_k)
        self.weights = [float((weights or {}).get(n, 1.0)) for n in names]
        self._finish = finish
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _run_nested_async_queries(
        self, queries: list[QueryBundle]
    ) -> dict[tuple[str, int], list[NodeWithScore]]:
        """Upstream's hook for a sync call with concurrent branches: every branch on a
        thread of this retriever's pool (one per branch, kept between queries), each in a
        copy of the caller's context so instrumentation spans keep their parent."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=len(self._retrievers), thread_name_prefix="clip-hybrid-branch"
                )
        pool = self._pool
        futures = {
            (query.query_str, i): pool.submit(
                contextvars.copy_context().run, _inner(retriever).retrieve, query
            )
            for query in queries
            for i, retriever in enumerate(self._retrievers)
        }
        return {key: future.result() for key, future in futures.items()}

    # Upstream's _retrieve/_aretrieve with num_queries=1 in RRF mode, except the cut to
    # similarity_top_k: it comes after `finish`, which drops ids whose image is gone (a
    # caption can outlive its image), so that k results still come back.

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.use_async:
            results = self._run_nested_async_queries([query_bundle])
        else:
            results = self._run_sync_queries([query_bundle])
        return self._top(self._reciprocal_rerank_fusion(results))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        results = await self._run_async_queries([query_bundle])
        fused = self._reciprocal_rerank_fusion(results)
        return await asyncio.to_thread(self._top, fused) if self._finish else self._top(fused)

    def _top(self, fused: list[NodeWithScore]) -> list[NodeWithScore]:
        """The first ``similarity_top_k`` fused results that ``finish`` keeps."""
        k = self.similarity_top_k
        if self._finish is None:
            return fused[:k]
        out: list[NodeWithScore] = []
        start = 0
        while len(out) < k and start < len(fused):
            window = fused[start : start + k - len(out)]
            start += len(window)
            out.extend(self._finish(window))
        return out

    def _reciprocal_rerank_fusion(
        self, results: dict[tuple[str, int], list[NodeWithScore]]
    ) -> list[NodeWithScore]:
        fused: dict[str, float] = {}
        first: dict[str, NodeWithScore] = {}
        branches: dict[str, dict[str, dict[str, float]]] = {}
        for (_query, index), hits in sorted(results.items(), key=lambda item: item[0][1]):
            name = self.branch_names[index]
            weight = self.weights[index]
            ranked = sorted(hits, key=lambda h: h.score or 0.0, reverse=True)
            for rank, hit in enumerate(ranked):
                node_id = hit.node.node_id
                first.setdefault(node_id, hit)
                fused[node_id] = fused.get(node_id, 0.0) + weight / (self.rrf_k + rank)
                per_branch = branches.setdefault(node_id, {})
                if name not in per_branch:  # a node twice in one branch: its best rank
                    per_branch[name] = {"rank": rank + 1, "score": float(hit.score or 0.0)}
        order = sorted(fused, key=lambda node_id: fused[node_id], reverse=True)
        out = []
        for node_id in order:
            hit = first[node_id]
            hit.score = fused[node_id]
            hit.node.metadata[HYBRID_METADATA_KEY] = {
                "rrf": fused[node_id],
                "branches": branches[node_id],
            }
            for keys in (
                hit.node.excluded_llm_metadata_keys,
                hit.node.excluded_embed_metadata_keys,
            ):
                if HYBRID_METADATA_KEY not in keys:
                    keys.append(HYBRID_METADATA_KEY)
            out.append(hit)
        return out


def format_branches(branches: dict[str, dict[str, float]], digits: int = 4) -> str:
    """``clip #12 0.1572, bm25 #1 4.3019``: each branch's rank and score, for people."""
    return ", ".join(
        f"{name} #{info['rank']} {info['score']:.{digits}f}" for name, info in branches.items()
    )


def branch_table(hits: Sequence[NodeWithScore]) -> list[dict[str, Any]]:
    """Fused results as plain rows: id, path, fused score and per-branch rank/score."""
    rows = []
    for rank, hit in enumerate(hits, 1):
        info = hit.node.metadata.get(HYBRID_METADATA_KEY, {})
        rows.append(
            {
                "rank": rank,
                "id": hit.node.node_id,
                "path": hit.node.metadata.get("file_path"),
                "rrf": info.get("rrf", hit.score),
                "branches": info.get("branches", {}),
            }
        )
    return rows
