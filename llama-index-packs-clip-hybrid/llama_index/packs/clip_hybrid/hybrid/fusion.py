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

It overrides private hooks of ``QueryFusionRetriever`` (``_run_nested_async_queries``,
``_reciprocal_rerank_fusion``, ``_retrieve``, ``_aretrieve``) and calls two more; upstream
has no public extension point for these. Its own ``_retrieve`` fuses with ``_fuse`` and
``_top`` (copying only the results handed out), not through ``_reciprocal_rerank_fusion``,
which stays for callers of upstream's hook. ``tests/test_hybrid.py`` pins their names and
parameters (a canary) and checks that, with the defaults, the fused scores are upstream's.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import MockLLM
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.retrievers.selfhit import ImageQueryBundle, to_query_bundle

from ..options import DEFAULT_RRF_K, check_rrf_k, check_weights
from ..redaction import package_logger, redact
from .nodes import HYBRID_METADATA_KEY

logger = package_logger(__name__)

#: The failed branches of the fusion running in this context: name -> exception.
_FAILURES: contextvars.ContextVar[dict[str, BaseException] | None] = contextvars.ContextVar(
    "clip_hybrid_branch_failures", default=None
)
#: Where :meth:`RRFFusionRetriever.retrieve_with_failures` collects them.
_REPORT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "clip_hybrid_failure_report", default=None
)


class _Branch(BaseRetriever):
    """One branch of the fusion: its sync retrieve runs on a worker thread, so branches
    overlap even when their async path blocks (CLIP's async embedding runs the forward
    pass inline); a failure is recorded for the fusion, which answers from the others."""

    def __init__(self, name: str, inner: BaseRetriever) -> None:
        self.name = name
        self.inner = inner
        super().__init__()

    def run(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        failures = _FAILURES.get()
        try:
            return self.inner.retrieve(query_bundle)
        except Exception as exc:
            if failures is None:
                raise
            failures[self.name] = exc
            return []

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.run(query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(contextvars.copy_context().run, self.run, query_bundle)


def failure_reason(exc: BaseException) -> str:
    """A branch's failure in one key-free line."""
    return redact(f"{type(exc).__name__}: {' '.join(str(exc).split())}")[:300]


class RRFFusionRetriever(QueryFusionRetriever):
    """``QueryFusionRetriever`` (reciprocal rank) over named branches, merged per node id.

    Args:
        branches: Branch name -> retriever; each should return image nodes.
        similarity_top_k: Fused results returned.
        rrf_k: The RRF constant (upstream: 60).
        weights: Branch name -> weight (default 1.0 each; upstream ignores weights in RRF).
        use_async: Run branches concurrently (default).
        finish: Applied to the fused top-k (the pack reads image rows for id-only nodes).
        image_fusion: For an image query (a bundle with ``image_path``, or the selfhit
            package's ``ImageQueryBundle``): the fusion that runs it and its query (the
            pack's: CLIP image->image plus the caption branches with the image's caption).
            None: every query goes to ``branches`` as given.

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
        image_fusion: Callable[[QueryBundle], tuple[RRFFusionRetriever, QueryBundle]] | None = None,
    ) -> None:
        if not branches:
            raise ValueError("Hybrid retrieval needs at least one branch.")
        rrf_k = check_rrf_k(rrf_k)
        weights = check_weights(weights, known=branches)
        names = list(branches)
        super().__init__(
            retrievers=[_Branch(n, branches[n]) for n in names],
            llm=MockLLM(),
            mode="reciprocal_rerank",  # type: ignore[arg-type]
            similarity_top_k=similarity_top_k,
            num_queries=1,
            use_async=use_async,
        )
        self.branch_names = names
        self.rrf_k = rrf_k
        self.weights = [weights.get(n, 1.0) for n in names]
        self._finish = finish
        self._image_fusion = image_fusion
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
            (query.query_str, i): pool.submit(contextvars.copy_context().run, branch.run, query)
            for query in queries
            for i, branch in enumerate(self._branches())
        }
        return {key: future.result() for key, future in futures.items()}

    def _branches(self) -> list[_Branch]:
        return [r for r in self._retrievers if isinstance(r, _Branch)]

    def retrieve_with_failures(
        self, query: str | QueryBundle
    ) -> tuple[list[NodeWithScore], dict[str, str]]:
        """:meth:`retrieve`, and the branches that failed (name -> reason) while the
        others answered. When every branch fails, the first failure is raised."""
        with _collect() as failed:
            hits = self.retrieve(query)
        return hits, failed

    async def aretrieve_with_failures(
        self, query: str | QueryBundle
    ) -> tuple[list[NodeWithScore], dict[str, str]]:
        """Async :meth:`retrieve_with_failures`."""
        with _collect() as failed:
            hits = await self.aretrieve(query)
        return hits, failed

    @contextmanager
    def _tolerating(self) -> Iterator[dict[str, BaseException]]:
        """Run the branches with failures recorded, not raised; then raise when none
        answered, else report the failures (to :meth:`retrieve_with_failures`, and in a
        warning)."""
        failures: dict[str, BaseException] = {}
        token = _FAILURES.set(failures)
        try:
            yield failures
        finally:
            _FAILURES.reset(token)
        if failures and len(failures) == len(self.branch_names):
            raise failures[self.branch_names[0]]  # every branch failed: the first one's
        if failures:
            reasons = {name: failure_reason(exc) for name, exc in failures.items()}
            report = _REPORT.get()
            if report is not None:
                report.update(reasons)
            logger.warning(
                "Hybrid search: branch %s failed (%s); the other branches answered.",
                ", ".join(reasons),
                "; ".join(reasons.values()),
            )

    # Upstream's _retrieve/_aretrieve with num_queries=1 in RRF mode, except the cut to
    # similarity_top_k: it comes after `finish`, which drops ids whose image is gone (a
    # caption can outlive its image), so that k results still come back.

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query_bundle = _named_image(query_bundle)
        if self._image_fusion is not None and _is_image_query(query_bundle):
            fusion, query = self._image_fusion(query_bundle)
            return fusion._retrieve(query)
        with self._tolerating():
            if self.use_async:
                results = self._run_nested_async_queries([query_bundle])
            else:
                results = self._run_sync_queries([query_bundle])
        return self._top(self._fuse(results))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query_bundle = _named_image(query_bundle)
        if self._image_fusion is not None and _is_image_query(query_bundle):
            fusion, query = await asyncio.to_thread(self._image_fusion, query_bundle)
            return await fusion._aretrieve(query)
        with self._tolerating():
            results = await self._run_async_queries([query_bundle])
        fused = self._fuse(results)
        return await asyncio.to_thread(self._top, fused) if self._finish else self._top(fused)

    def _top(self, fused: list[_Fused]) -> list[NodeWithScore]:
        """The first ``similarity_top_k`` fused results that ``finish`` keeps, as new
        nodes with ``metadata["hybrid"]``. Only the results looked at are copied (a
        fusion of 3 x 50 candidates into 10 copied all 150: a third of its time)."""
        k = self.similarity_top_k
        out: list[NodeWithScore] = []
        start = 0
        while len(out) < k and start < len(fused):
            window = [item.annotated() for item in fused[start : start + k - len(out)]]
            start += len(window)
            out.extend(self._finish(window) if self._finish is not None else window)
        return out

    def _reciprocal_rerank_fusion(
        self, results: dict[tuple[str, int], list[NodeWithScore]]
    ) -> list[NodeWithScore]:
        """Upstream's fusion hook: every candidate, fused, as a new node with
        ``metadata["hybrid"]`` (retrieval itself copies only the top-k, :meth:`_top`)."""
        return [item.annotated() for item in self._fuse(results)]

    def _fuse(self, results: dict[tuple[str, int], list[NodeWithScore]]) -> list[_Fused]:
        """RRF over the branches' ranked hits, best first; the branches' nodes unchanged."""
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
        return [_Fused(first[i].node, fused[i], branches[i]) for i in order]


class _Fused:
    """One fused result before it is handed out: the branch's node, the RRF score and
    the per-branch ranks and scores."""

    __slots__ = ("branches", "node", "score")

    def __init__(self, node: BaseNode, score: float, branches: dict[str, dict[str, float]]):
        self.node = node
        self.score = score
        self.branches = branches

    def annotated(self) -> NodeWithScore:
        """A new node (the branch's own is not changed) carrying ``metadata["hybrid"]``."""
        node = self.node
        info = {"rrf": self.score, "branches": self.branches}
        copy = node.model_copy(
            update={
                "metadata": {**node.metadata, HYBRID_METADATA_KEY: info},
                "excluded_llm_metadata_keys": _with(node.excluded_llm_metadata_keys),
                "excluded_embed_metadata_keys": _with(node.excluded_embed_metadata_keys),
            }
        )
        return NodeWithScore(node=copy, score=self.score)


def _is_image_query(bundle: QueryBundle) -> bool:
    return isinstance(bundle, ImageQueryBundle) or bool(bundle.image_path)


def _named_image(bundle: QueryBundle) -> QueryBundle:
    """A text bundle whose text names an existing image file (a path an agent passes
    through ``RetrieverTool``, which wraps it in newlines) as an image query; any other
    bundle as it is: "report.png" with no such file is text, as every engine passes
    bundles and a bundle's text is text to ``SelfHitFilteringRetriever`` too."""
    if _is_image_query(bundle) or not bundle.query_str:
        return bundle
    try:
        named = to_query_bundle(bundle.query_str)
    except FileNotFoundError:  # "report.png", no such file: the words are the query
        return bundle
    return named if isinstance(named, ImageQueryBundle) else bundle


def _with(keys: list[str]) -> list[str]:
    return keys if HYBRID_METADATA_KEY in keys else [*keys, HYBRID_METADATA_KEY]


@contextmanager
def _collect() -> Iterator[dict[str, str]]:
    report: dict[str, str] = {}
    token = _REPORT.set(report)
    try:
        yield report
    finally:
        _REPORT.reset(token)
