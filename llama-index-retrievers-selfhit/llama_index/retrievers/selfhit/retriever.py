"""SelfHitFilteringRetriever: image->image results without the query image itself."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import os
import tempfile
from collections.abc import Callable, Generator, Iterator
from typing import Any

import llama_index.core.instrumentation as instrument
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.bridge.pydantic import BaseModel, Field
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.retrievers.selfhit._identity import (
    DEFAULT_PATH_METADATA_KEYS,
    ImageQueryBundle,
    QueryImage,
    image_path_in,
)
from llama_index.retrievers.selfhit.events import SelfHitFilteredEvent
from llama_index.retrievers.selfhit.rules import DroppedHit, SelfHitRules

dispatcher = instrument.get_dispatcher(__name__)

#: Anything ``retrieve`` accepts. A ``str`` is a text query unless it ends in an image
#: suffix (``"photos/cat.png"``); a ``pathlib.Path`` is always an image path.
SelfHitQuery = str | os.PathLike | bytes | bytearray | QueryBundle | BaseNode | Any

TopKSetter = Callable[[BaseRetriever, int], BaseRetriever]

# Milvus' largest allowed top-k; other stores are smaller or unbounded.
DEFAULT_MAX_FETCH = 16384

_IMAGE_TOP_K_ATTRS = ("_image_similarity_top_k", "image_similarity_top_k")
_TOP_K_ATTRS = ("_similarity_top_k", "similarity_top_k")


class SelfHitReport(BaseModel):
    """What one image query dropped, for display ("self-hit 1.0 filtered") and debugging."""

    query_path: str | None = None
    query_node_id: str | None = None
    dropped: list[DroppedHit] = Field(default_factory=list)
    fetched: int = Field(description="Results requested from the wrapped retriever, last round.")
    rounds: int = Field(description="Calls made to the wrapped retriever.")


def _is_multimodal(retriever: BaseRetriever) -> bool:
    return hasattr(retriever, "image_to_image_retrieve") and hasattr(
        retriever, "aimage_to_image_retrieve"
    )


def _top_k_attr(retriever: BaseRetriever) -> str | None:
    names = (*_IMAGE_TOP_K_ATTRS, *_TOP_K_ATTRS) if _is_multimodal(retriever) else _TOP_K_ATTRS
    for name in names:
        if isinstance(getattr(retriever, name, None), int):
            return name
    return None


def copy_with_top_k(retriever: BaseRetriever, top_k: int) -> BaseRetriever:
    """A shallow copy of ``retriever`` asking for ``top_k`` results; the original is untouched.

    Works for retrievers that keep their k in ``similarity_top_k`` (or, for multimodal
    retrievers, ``image_similarity_top_k``), which covers the LlamaIndex vector, multimodal
    and BM25 retrievers. Pass ``with_top_k=`` to SelfHitFilteringRetriever for others.
    """
    attr = _top_k_attr(retriever)
    if attr is None:
        raise TypeError(
            f"{type(retriever).__name__} has no similarity_top_k attribute; pass "
            "with_top_k=<function(retriever, k) -> retriever> to SelfHitFilteringRetriever."
        )
    clone = copy.copy(retriever)
    setattr(clone, attr, top_k)
    return clone


class SelfHitFilteringRetriever(BaseRetriever):
    """Wrap any retriever and remove the query image itself from image->image results.

    Upstream image->image retrieval returns the query image first (score 1.0 with COSINE),
    and slicing it off with ``results[1:]`` is wrong whenever the query image is not in
    the index or is stored more than once. This wrapper identifies self-hits by node id,
    resolved file path or content hash (see :class:`SelfHitRules`), never by score alone,
    over-fetches so that exactly ``similarity_top_k`` results come back whenever the index
    holds that many other images, and reports what it dropped.

    Example:
        >>> from llama_index.retrievers.selfhit import SelfHitFilteringRetriever
        >>> inner = index.as_retriever(image_similarity_top_k=5)  # doctest: +SKIP
        >>> retriever = SelfHitFilteringRetriever(inner)  # doctest: +SKIP
        >>> hits = retriever.retrieve(Path("photos/cat.png"))  # doctest: +SKIP
        >>> retriever.last_report.dropped  # doctest: +SKIP
        [DroppedHit(node_id='...', score=1.0, reason='path')]

    Args:
        retriever: The retriever to wrap. Multimodal retrievers are called through
            ``image_to_image_retrieve``; others through ``retrieve`` with a QueryBundle
            whose ``image_path`` is set.
        similarity_top_k: Results to return for an image query. Defaults to the wrapped
            retriever's own (image) top-k.
        match_id, match_path, match_bytes, near_duplicate_threshold, path_metadata_keys:
            The rules, see :class:`SelfHitRules`.
        overfetch: Extra results asked for on the first call (one self-hit is typical).
        max_fetch: Upper bound on the k asked of the wrapped retriever.
        with_top_k: ``f(retriever, k) -> retriever`` that returns a retriever asking for
            k results without changing the original. Defaults to :func:`copy_with_top_k`.

    Raises:
        ValueError: On a configuration that cannot work (all rules off, k < 1).
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        *,
        similarity_top_k: int | None = None,
        match_id: bool = True,
        match_path: bool = True,
        match_bytes: bool = True,
        near_duplicate_threshold: float | None = None,
        path_metadata_keys: tuple[str, ...] = DEFAULT_PATH_METADATA_KEYS,
        overfetch: int = 2,
        max_fetch: int = DEFAULT_MAX_FETCH,
        with_top_k: TopKSetter | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(retriever, BaseRetriever):
            raise TypeError(
                f"retriever must be a LlamaIndex BaseRetriever, got {type(retriever).__name__}."
            )
        if similarity_top_k is not None and similarity_top_k < 1:
            raise ValueError(f"similarity_top_k={similarity_top_k} must be >= 1.")
        if overfetch < 0:
            raise ValueError(f"overfetch={overfetch} must be >= 0.")
        if max_fetch < 1:
            raise ValueError(f"max_fetch={max_fetch} must be >= 1.")
        self.rules = SelfHitRules(
            match_id=match_id,
            match_path=match_path,
            match_bytes=match_bytes,
            near_duplicate_threshold=near_duplicate_threshold,
            path_metadata_keys=tuple(path_metadata_keys),
        )
        if not self.rules.any_enabled:
            raise ValueError(
                "All self-hit rules are off, so nothing would ever be filtered; enable one of "
                "match_id, match_path, match_bytes or set near_duplicate_threshold."
            )
        self.retriever = retriever
        self.similarity_top_k = similarity_top_k
        self.overfetch = overfetch
        self.max_fetch = max_fetch
        self._with_top_k = with_top_k
        self._last_report: contextvars.ContextVar[SelfHitReport | None] = contextvars.ContextVar(
            f"selfhit_report_{id(self)}", default=None
        )
        super().__init__(
            callback_manager=callback_manager or retriever.callback_manager, verbose=verbose
        )

    @property
    def last_report(self) -> SelfHitReport | None:
        """The report of the last image query made from this thread or asyncio task."""
        return self._last_report.get()

    # -- public entry points: accept paths, bytes, PIL images and nodes too ------------

    def retrieve(self, str_or_query_bundle: SelfHitQuery) -> list[NodeWithScore]:
        """Retrieve for a text or image query; image queries come back without self-hits."""
        return super().retrieve(to_query_bundle(str_or_query_bundle))

    async def aretrieve(self, str_or_query_bundle: SelfHitQuery) -> list[NodeWithScore]:
        """Async :meth:`retrieve`."""
        return await super().aretrieve(to_query_bundle(str_or_query_bundle))

    # -- BaseRetriever hooks -----------------------------------------------------------

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = QueryImage.from_query_bundle(query_bundle)
        if query is None:
            return self.retriever.retrieve(query_bundle)
        with _with_image_file(query_bundle, query) as bundle:
            plan = self._plan(query)
            top_k = next(plan)
            while True:
                hits = self._inner(top_k).image_query(bundle)
                try:
                    top_k = plan.send(hits)
                except StopIteration as done:
                    return done.value

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = QueryImage.from_query_bundle(query_bundle)
        if query is None:
            return await self.retriever.aretrieve(query_bundle)
        with _with_image_file(query_bundle, query) as bundle:
            plan = self._plan(query)
            top_k = next(plan)
            while True:
                hits = await self._inner(top_k).aimage_query(bundle)
                try:
                    top_k = plan.send(hits)
                except StopIteration as done:
                    return done.value

    # -- the one body of logic, shared by sync and async --------------------------------

    def _wanted_k(self) -> int | None:
        if self.similarity_top_k is not None:
            return self.similarity_top_k
        attr = _top_k_attr(self.retriever)
        return getattr(self.retriever, attr) if attr else None

    def _plan(
        self, query: QueryImage
    ) -> Generator[int | None, list[NodeWithScore], list[NodeWithScore]]:
        """Yield the k to fetch, receive the hits, return the filtered top-k.

        Fetches ``k + overfetch``; when filtering leaves fewer than k and the wrapped
        retriever returned all it was asked for (so more may exist), asks again with a
        larger k, up to ``max_fetch``.
        """
        wanted = self._wanted_k()
        can_resize = self._with_top_k is not None or _top_k_attr(self.retriever) is not None
        fetch: int | None = None
        if wanted is not None and can_resize:
            fetch = min(wanted + self.overfetch, self.max_fetch)
        rounds = 0
        while True:
            rounds += 1
            hits = yield fetch
            kept, dropped = self.rules.split(query, hits)
            done = (
                fetch is None
                or wanted is None
                or len(kept) >= wanted
                or len(hits) < fetch  # the index has nothing more
                or fetch >= self.max_fetch
            )
            if done:
                result = kept if wanted is None else kept[:wanted]
                self._report(query, dropped, fetched=len(hits), rounds=rounds, returned=len(result))
                return result
            assert wanted is not None and fetch is not None
            fetch = min(max(fetch * 2, wanted + len(dropped) + self.overfetch), self.max_fetch)

    def _report(
        self,
        query: QueryImage,
        dropped: list[DroppedHit],
        *,
        fetched: int,
        rounds: int,
        returned: int,
    ) -> None:
        report = SelfHitReport(
            query_path=query.path,
            query_node_id=query.node_id,
            dropped=dropped,
            fetched=fetched,
            rounds=rounds,
        )
        self._last_report.set(report)
        dispatcher.event(
            SelfHitFilteredEvent(
                query_path=query.path,
                query_node_id=query.node_id,
                dropped=dropped,
                returned=returned,
            )
        )

    def _inner(self, top_k: int | None) -> _ImageQueryCaller:
        retriever = self.retriever
        if top_k is not None:
            setter = self._with_top_k or copy_with_top_k
            retriever = setter(retriever, top_k)
        return _ImageQueryCaller(retriever)


@dataclasses.dataclass(frozen=True)
class _ImageQueryCaller:
    """Calls a retriever's image->image path with a fresh copy of the bundle.

    Upstream multimodal retrievers write the query embedding into the bundle they get;
    a copy keeps the caller's bundle untouched.
    """

    retriever: BaseRetriever

    def image_query(self, bundle: QueryBundle) -> list[NodeWithScore]:
        fresh = dataclasses.replace(bundle)
        if _is_multimodal(self.retriever):
            return self.retriever.image_to_image_retrieve(fresh)  # type: ignore[attr-defined]
        return self.retriever.retrieve(fresh)

    async def aimage_query(self, bundle: QueryBundle) -> list[NodeWithScore]:
        fresh = dataclasses.replace(bundle)
        if _is_multimodal(self.retriever):
            return await self.retriever.aimage_to_image_retrieve(fresh)  # type: ignore[attr-defined]
        return await self.retriever.aretrieve(fresh)


def to_query_bundle(query: SelfHitQuery) -> QueryBundle:
    """Normalise any accepted query form to a QueryBundle (image queries: ImageQueryBundle).

    Raises:
        FileNotFoundError: An image path that does not exist.
        ValueError: Bytes or a file that is not a readable image.
        TypeError: A query of an unsupported type.
    """
    if isinstance(query, ImageQueryBundle):
        return query
    if isinstance(query, QueryBundle):
        if not query.image_path:
            return query
        image = QueryImage.from_path(query.image_path)
        return ImageQueryBundle(
            query_str=query.query_str,
            image_path=query.image_path,
            custom_embedding_strs=query.custom_embedding_strs,
            embedding=query.embedding,
            query_image=image,
        )
    if isinstance(query, BaseNode):
        image = QueryImage.from_node(query)
        return ImageQueryBundle(query_str="", image_path=image.path, query_image=image)
    named = image_path_in(query) if isinstance(query, str) else None
    if isinstance(query, os.PathLike) or named is not None:
        path: Any = named if named is not None else query
        image = QueryImage.from_path(path)
        return ImageQueryBundle(query_str="", image_path=image.path, query_image=image)
    if isinstance(query, str):
        return QueryBundle(query_str=query)
    if isinstance(query, (bytes, bytearray)):
        image = QueryImage.from_bytes(bytes(query))
        return ImageQueryBundle(query_str="", image_path=None, query_image=image)
    if hasattr(query, "save") and hasattr(query, "mode") and hasattr(query, "size"):
        image = QueryImage.from_pil(query)
        return ImageQueryBundle(query_str="", image_path=image.path, query_image=image)
    raise TypeError(
        f"Unsupported query type {type(query).__name__}: pass text (str), an image path "
        "(pathlib.Path or str ending in an image suffix), bytes, a PIL image, an ImageNode "
        "or a QueryBundle."
    )


@contextlib.contextmanager
def _with_image_file(bundle: QueryBundle, query: QueryImage) -> Iterator[QueryBundle]:
    """Yield a bundle whose ``image_path`` names a file: upstream embedders need a path.

    Queries given as bytes or in-memory images are written to a temporary file that is
    deleted afterwards; its path never matches an indexed file.
    """
    if bundle.image_path and os.path.isfile(bundle.image_path):
        yield bundle
        return
    if query.data is None:
        raise ValueError(
            "The query image has neither a readable path nor bytes; pass a path or bytes."
        )
    fd, name = tempfile.mkstemp(prefix="selfhit-query-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(query.data)
        yield dataclasses.replace(bundle, image_path=name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
