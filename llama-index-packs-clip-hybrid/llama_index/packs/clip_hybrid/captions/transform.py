"""VLMCaptionTransform: image nodes in, image nodes plus caption nodes out.

A ``TransformComponent`` for an ``IngestionPipeline`` and the captioning stage of
:class:`~llama_index.packs.clip_hybrid.ClipHybridPack`. What it adds to calling a vision
LLM in a loop:

- bounded concurrency (``concurrency`` requests in flight, async);
- retries with exponential backoff and full jitter on 429 / 5xx / timeouts / broken
  responses, honouring the service's Retry-After; a per-request timeout; a bad key or an
  unknown model stops the run instead of failing every image one by one;
- a persistent cache by (image content hash, model, prompt, language, detail): a re-run
  on unchanged images makes no call, a changed image is captioned again;
- a failed caption never fails the batch: the image node passes through unchanged, the
  failure is in :attr:`VLMCaptionTransform.last_report` with its reason, and the next run
  asks only for what failed (successes are cached);
- a usage summary: calls, retries, failures and tokens when the service reports them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from llama_index.core.async_utils import asyncio_run
from llama_index.core.schema import (
    BaseNode,
    ImageDocument,
    ImageNode,
    TextNode,
    TransformComponent,
)
from pydantic import Field, PrivateAttr

from ..images.sources import (
    ImageSource,
    ImageSourceError,
    as_image_node,
    node_path,
    node_source,
)
from ..redaction import package_logger, redact_known
from .base import Caption, CaptionError, CaptionImage
from .cache import CaptionCache, open_cache
from .choice import resolve_captioner
from .errors import classify_error
from .nodes import make_caption_node
from .report import CaptionFailure, CaptionOutcome, CaptionReport
from .retry import RetryPolicy

logger = package_logger(__name__)

ImageText = Literal["keep", "fill_empty", "replace"]


class VLMCaptionTransform(TransformComponent):
    """Caption image nodes with a vision LLM (or OCR) and add caption nodes.

    Output: the input nodes (image nodes unchanged unless ``image_text`` says otherwise),
    followed by one ``TextNode`` per captioned image. A caption node carries the id of
    its image in ``metadata["image_id"]`` and as its SOURCE relationship, so hybrid
    retrieval can map a caption hit back to the image; its id is deterministic, so
    re-running never duplicates it.

    Example:
        >>> from llama_index.core.ingestion import IngestionPipeline
        >>> transform = VLMCaptionTransform(captioner="openai")  # doctest: +SKIP
        >>> nodes = IngestionPipeline(transformations=[transform]).run(
        ...     documents=SimpleDirectoryReader("photos/").load_data())  # doctest: +SKIP
        >>> transform.last_report.usage  # doctest: +SKIP

    Args:
        captioner: ``"auto"``, ``"openai"``, ``"dashscope"``, ``"ocr"``, a
            :class:`Captioner`, or any LlamaIndex LLM that accepts image blocks.
        concurrency: Requests in flight at once.
        max_retries: Extra attempts per image on retryable errors.
        timeout: Seconds per request.
        backoff_base, backoff_max: Exponential backoff with full jitter, in seconds:
            attempt n waits uniform(0, min(backoff_max, backoff_base * 2**n)), or what the
            service's Retry-After asks (capped at ``max_retry_after``).
        cache_path: The caption cache (SQLite); None for the user cache folder,
            ``":memory:"`` for none that outlives the transform.
        image_text: ``keep`` (default) leaves image nodes' text alone; ``fill_empty``
            puts the caption into image nodes that have no text; ``replace`` always does.
        include_images: Return the image nodes too (default) or only the caption nodes.
        allow_image_urls: Fetch nodes' ``image_url`` (off by default: a URL from a
            document could point into the user's network). Even when allowed, only public
            addresses are fetched (see :mod:`.safe_fetch`).
    """

    captioner: Any = Field(description="The Captioner in use.")
    concurrency: int = Field(default=8, ge=1, le=256)
    max_retries: int = Field(default=4, ge=0, le=20)
    timeout: float = Field(default=60.0, gt=0)
    backoff_base: float = Field(default=1.0, ge=0)
    backoff_max: float = Field(default=30.0, ge=0)
    max_retry_after: float = Field(default=120.0, ge=0)
    cache_path: str | None = Field(default=None)
    image_text: ImageText = Field(default="keep")
    include_images: bool = Field(default=True)
    allow_image_urls: bool = Field(default=False)

    _cache: CaptionCache | None = PrivateAttr(default=None)
    _last_report: CaptionReport | None = PrivateAttr(default=None)
    _rng: random.Random = PrivateAttr(default_factory=random.Random)

    def __init__(self, captioner: Any = "auto", **kwargs: Any) -> None:
        resolved = resolve_captioner(captioner)
        if resolved is None:
            raise ValueError(
                "No captioner available: set OPENAI_API_KEY or DASHSCOPE_API_KEY, pass an "
                "LLM, or install the OCR extra: pip install 'llama-index-packs-clip-hybrid[ocr]'."
            )
        super().__init__(captioner=resolved, **kwargs)  # type: ignore[call-arg]

    @classmethod
    def class_name(cls) -> str:
        return "VLMCaptionTransform"

    @property
    def cache(self) -> CaptionCache:
        if self._cache is None:
            self._cache = open_cache(self.cache_path)
        return self._cache

    def close(self) -> None:
        """Close the caption cache (opened again on next use)."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    @property
    def last_report(self) -> CaptionReport | None:
        """The report of the latest run."""
        return self._last_report

    # -- TransformComponent ---------------------------------------------------------------

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        return asyncio_run(self.acall(nodes, **kwargs))

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        report = CaptionReport(captioner=self.captioner.name)
        started = time.perf_counter()
        images: list[CaptionImage] = []
        by_key: dict[str, BaseNode] = {}
        as_image: dict[int, ImageNode | ImageDocument] = {}  # id(caller's node) -> image
        for node in nodes:
            image_node = as_image_node(node)
            if image_node is None:
                continue
            as_image[id(node)] = image_node
            try:
                image = await asyncio.to_thread(_image_of, image_node, self.allow_image_urls)
            except CaptionError as exc:
                url = redact_known(str(getattr(image_node, "image_url", None) or ""))
                report.failed.append(
                    CaptionFailure(node.node_id, node_path(image_node) or url, exc.reason)
                )
                continue
            images.append(image)
            by_key[image.key] = node
        outcomes = await self._run(images, report)
        captions: list[BaseNode] = []
        updated: dict[int, BaseNode] = {}  # the caller's nodes are never changed: copies
        for outcome in outcomes:
            if outcome.caption is None or not outcome.caption.text:
                continue
            node = by_key[outcome.image.key]
            image_node = as_image[id(node)]
            captions.append(self.caption_node(outcome, image_node))
            if self.image_text == "replace" or (
                self.image_text == "fill_empty" and not (image_node.text or "").strip()
            ):
                copy = image_node.model_copy(deep=True)
                copy.set_content(outcome.caption.text)
                updated[id(node)] = copy
        report.seconds = time.perf_counter() - started
        self._finish(report)
        kept = [
            updated.get(id(n), as_image.get(id(n), n))
            for n in nodes
            if self.include_images or id(n) not in as_image
        ]
        return [*kept, *captions]

    # -- lower level: what the pack uses ------------------------------------------------

    def caption_images(
        self, images: Sequence[CaptionImage], progress: Callable[[int], Any] | None = None
    ) -> tuple[list[CaptionOutcome], CaptionReport]:
        """Caption ``images`` (bytes or paths); one outcome per image, in order.
        ``progress(n)`` is called as each ``n`` more images are done (cached ones first)."""
        return asyncio_run(self.acaption_images(images, progress))

    async def acaption_images(
        self, images: Sequence[CaptionImage], progress: Callable[[int], Any] | None = None
    ) -> tuple[list[CaptionOutcome], CaptionReport]:
        report = CaptionReport(captioner=self.captioner.name)
        started = time.perf_counter()
        outcomes = await self._run(images, report, progress)
        report.seconds = time.perf_counter() - started
        self._finish(report)
        return outcomes, report

    def caption_node(self, outcome: CaptionOutcome, image_node: BaseNode | None = None) -> TextNode:
        """The caption node for one outcome (its id is stable across runs)."""
        return make_caption_node(outcome, self.captioner)

    # -- the run --------------------------------------------------------------------------

    async def _run(
        self,
        images: Sequence[CaptionImage],
        report: CaptionReport,
        progress: Callable[[int], Any] | None = None,
    ) -> list[CaptionOutcome]:
        key = self.captioner.cache_key
        name = self.captioner.name
        cached = await asyncio.to_thread(self.cache.get_many, (i.sha256 for i in images), key)
        results: dict[str, CaptionOutcome] = {}
        groups: dict[str, list[CaptionImage]] = {}
        for image in images:
            hit = cached.get(image.sha256)
            if hit is not None:
                results[image.key] = CaptionOutcome(image, hit, cached=True)
                report.cached += 1
            else:  # the same bytes twice are captioned once
                groups.setdefault(image.sha256, []).append(image)
        fatal: list[str] = []
        queue: Iterator[list[CaptionImage]] = iter(list(groups.values()))
        if progress is not None and report.cached:
            progress(report.cached)

        async def one(group: list[CaptionImage]) -> None:
            if fatal:
                for image in group:
                    results[image.key] = CaptionOutcome(image, failure=f"not attempted: {fatal[0]}")
                return
            loaded, unreadable = await self._load_group(group)
            for image in group:
                if image.key in unreadable:
                    results[image.key] = CaptionOutcome(image, failure=unreadable[image.key])
            if loaded is None:
                return
            caption, failure = await self._caption_one(loaded, report, fatal)
            if caption is not None:
                try:
                    await asyncio.to_thread(self.cache.put, loaded.sha256, key, name, caption)
                except Exception as exc:  # disk full, database locked: keep the caption
                    logger.warning("Caption cache write failed (%s); continuing.", exc)
            for image in group:
                if image.key not in unreadable:
                    results[image.key] = CaptionOutcome(image, caption, failure=failure)

        async def worker() -> None:
            for group in queue:
                await one(group)
                if progress is not None:
                    progress(len(group))

        workers = min(self.concurrency, len(groups))
        await asyncio.gather(*(worker() for _ in range(workers)))
        report.stopped = fatal[0] if fatal else ""
        outcomes = [results[image.key] for image in images]
        for outcome in outcomes:
            if outcome.failure is not None:
                report.failed.append(
                    CaptionFailure(outcome.image.key, outcome.image.path, outcome.failure)
                )
            elif outcome.caption is not None and not outcome.caption.text:
                report.empty += 1
            elif not outcome.cached:
                report.captioned += 1
        return outcomes

    @staticmethod
    async def _load_group(
        group: list[CaptionImage],
    ) -> tuple[CaptionImage | None, dict[str, str]]:
        """The bytes of the first image of ``group`` (images of the same stored sha256,
        captioned once) that can be read and still has those bytes, and the failures of
        those before it: a file deleted or changed since it was indexed fails alone, and
        never lends its new content's caption to its former copies."""
        unreadable: dict[str, str] = {}
        for image in group:
            try:
                loaded = await asyncio.to_thread(_load, image)
            except CaptionError as exc:
                unreadable[image.key] = exc.reason
                continue
            if loaded.sha256 != image.sha256:
                unreadable[image.key] = "the file changed since it was indexed; index it again"
                continue
            return loaded, unreadable
        return None, unreadable

    async def _caption_one(
        self, loaded: CaptionImage, report: CaptionReport, fatal: list[str]
    ) -> tuple[Caption | None, str | None]:
        """Up to 1 + max_retries attempts (see :mod:`.retry`); returns (caption, failure)."""
        usage = report.usage
        attempts = 0

        async def attempt() -> Caption:
            nonlocal attempts
            if attempts:
                if fatal:  # another request found the key revoked meanwhile
                    raise CaptionError(f"not retried: {fatal[0]}")
                usage.retries += 1
            attempts += 1
            usage.calls += 1
            try:
                return await self.captioner.acaption(loaded, timeout=self.timeout)
            except Exception as exc:
                usage.failed_calls += 1
                error = classify_error(exc, self.timeout)
                if error.fatal and not fatal:
                    fatal.append(error.reason)
                    logger.error("Captioning stopped: %s", error.reason)
                raise error from exc

        try:
            caption = await self._retry_policy().acall(attempt, give_up=lambda: bool(fatal))
        except CaptionError as error:
            if error.fatal or error.reason.startswith("not retried"):
                return None, error.reason
            tries = f" (after {attempts} attempts)" if attempts > 1 else ""
            return None, f"{error.reason}{tries}"
        usage.add(caption)
        if not caption.text and self.captioner.empty_is_failure:
            return None, "the model returned an empty caption"
        return caption, None

    def _retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            max_retry_after=self.max_retry_after,
            rng=self._rng,
        )

    def _finish(self, report: CaptionReport) -> None:
        self._last_report = report
        logger.info(
            "Captions by %s: %d new, %d cached, %d failed; %d calls (%d retries), %d tokens.",
            report.captioner,
            report.captioned,
            report.cached,
            len(report.failed),
            report.usage.calls,
            report.usage.retries,
            report.usage.total_tokens,
        )
        if report.failed:
            first = report.failed[0]
            logger.warning(
                "%d image(s) got no caption (they stay indexed and are retried next run), "
                "e.g. %s: %s",
                len(report.failed),
                first.path or first.key,
                first.reason,
            )


# -- where the bytes come from ----------------------------------------------------------


def _image_of(node: ImageNode | ImageDocument, allow_urls: bool = False) -> CaptionImage:
    """A CaptionImage for a node: its file (hashed now, read later), bytes, or URL."""
    try:
        source = node_source(node, allow_urls=allow_urls)
        if source.data is None:
            return CaptionImage(
                key=node.node_id, data=b"", sha256=source.sha256(), path=source.path
            )
        return CaptionImage.from_bytes(node.node_id, source.data)
    except ImageSourceError as exc:
        raise CaptionError(exc.reason) from exc


def _load(image: CaptionImage) -> CaptionImage:
    """The image with its bytes (read from its path when not in memory)."""
    if image.data:
        return image
    try:
        data = ImageSource(path=image.path).read()
    except ImageSourceError as exc:
        raise CaptionError(exc.reason) from exc
    return CaptionImage.from_bytes(image.key, data, image.path)
