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
import base64
import binascii
import logging
import os
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from llama_index.core.async_utils import asyncio_run
from llama_index.core.schema import (
    BaseNode,
    ImageDocument,
    ImageNode,
    NodeRelationship,
    ObjectType,
    RelatedNodeInfo,
    TextNode,
    TransformComponent,
)
from pydantic import Field, PrivateAttr

from ..images.decode import file_sha256
from ..images.fetch import UrlRefusedError, fetch_public_url
from .cache import CaptionCache, default_cache_path
from .captioners import (
    Caption,
    Captioner,
    CaptionError,
    CaptionImage,
    LLMCaptioner,
    OCRCaptioner,
    classify_error,
)

logger = logging.getLogger(__name__)

#: Namespace of caption node ids: uuid5(namespace, "<image node id>|<captioner cache key>").
CAPTION_ID_NAMESPACE = uuid.UUID("0c3d2a8e-51b4-4f7e-9d2a-7c1e5f8b9a60")

#: Metadata keys of a caption node (kept out of the embedded and LLM-visible text).
CAPTION_METADATA_KEYS = (
    "image_id",
    "image_path",
    "image_sha256",
    "captioner",
    "caption_source",
    "caption_language",
)

#: Images fetched from ``image_url`` larger than this are refused.
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024

ImageText = Literal["keep", "fill_empty", "replace"]


def caption_node_id(image_id: str, cache_key: str) -> str:
    """The deterministic id of the caption of ``image_id`` by one captioner setting."""
    return str(uuid.uuid5(CAPTION_ID_NAMESPACE, f"{image_id}|{cache_key}"))


@dataclass(frozen=True)
class CaptionFailure:
    """An image that got no caption this run, and why (it is retried next run)."""

    key: str
    path: str
    reason: str


@dataclass
class CaptionUsage:
    """What the run cost: API calls (retries included), failed calls, tokens reported."""

    calls: int = 0
    retries: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, caption: Caption) -> None:
        self.prompt_tokens += caption.prompt_tokens or 0
        self.completion_tokens += caption.completion_tokens or 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}


@dataclass
class CaptionReport:
    """What one captioning run did. ``failed`` items are asked again by the next run."""

    captioner: str = ""
    captioned: int = 0
    cached: int = 0
    empty: int = 0
    failed: list[CaptionFailure] = field(default_factory=list)
    usage: CaptionUsage = field(default_factory=CaptionUsage)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["usage"] = self.usage.to_dict()
        return out


@dataclass(frozen=True)
class CaptionOutcome:
    """The result for one image: a caption (possibly from the cache) or a failure."""

    image: CaptionImage
    caption: Caption | None = None
    cached: bool = False
    failure: str | None = None


def resolve_captioner(
    choice: str | Captioner | Any = "auto",
    *,
    model: str | None = None,
    language: str | None = None,
    prompt: str | None = None,
    detail: str = "auto",
) -> Captioner | None:
    """The captioner for ``auto|openai|dashscope|ocr|none``, a Captioner, or an LLM.

    ``auto``: GPT-4o when ``OPENAI_API_KEY`` is set, else Qwen-VL-Max when
    ``DASHSCOPE_API_KEY`` is set, else OCR when ``rapidocr-onnxruntime`` is installed,
    else None (no captions). The choice is logged.
    """
    if isinstance(choice, Captioner):
        return choice
    if not isinstance(choice, str):  # a LlamaIndex LLM that takes image blocks
        return LLMCaptioner(choice, **_llm_options(language, prompt, detail))
    if choice == "auto":
        if os.environ.get("OPENAI_API_KEY"):
            choice = "openai"
        elif os.environ.get("DASHSCOPE_API_KEY"):
            choice = "dashscope"
        elif OCRCaptioner.available():
            choice = "ocr"
        else:
            logger.info("Captions: none (no OPENAI_API_KEY or DASHSCOPE_API_KEY, no OCR).")
            return None
        logger.info("Captions: %s (chosen automatically).", choice)
    if choice == "none":
        return None
    if choice == "openai":
        return LLMCaptioner.openai(model or "gpt-4o", **_llm_options(language, prompt, detail))
    if choice == "dashscope":
        return LLMCaptioner.dashscope(
            model or "qwen-vl-max", **_llm_options(language, prompt, detail)
        )
    if choice == "ocr":
        if not OCRCaptioner.available():
            raise ValueError(
                "captioner='ocr' needs rapidocr-onnxruntime: "
                "pip install 'llama-index-packs-clip-hybrid[ocr]' (Python < 3.13)."
            )
        return OCRCaptioner()
    raise ValueError(f"captioner={choice!r} is not one of auto, openai, dashscope, ocr, none.")


def _llm_options(language: str | None, prompt: str | None, detail: str) -> dict[str, Any]:
    options: dict[str, Any] = {"language": language, "detail": detail}
    if prompt:
        options["prompt"] = prompt
    return options


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
            self._cache = CaptionCache(self.cache_path or default_cache_path())
        return self._cache

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
        by_key: dict[str, ImageNode | ImageDocument] = {}
        for node in nodes:
            if not isinstance(node, (ImageNode, ImageDocument)):
                continue
            try:
                image = await asyncio.to_thread(_image_of, node, self.allow_image_urls)
            except CaptionError as exc:
                report.failed.append(CaptionFailure(node.node_id, _path_of(node), exc.reason))
                continue
            images.append(image)
            by_key[image.key] = node
        outcomes = await self._run(images, report)
        captions: list[BaseNode] = []
        for outcome in outcomes:
            if outcome.caption is None or not outcome.caption.text:
                continue
            node = by_key[outcome.image.key]
            captions.append(self.caption_node(outcome, node))
            if self.image_text == "replace" or (
                self.image_text == "fill_empty" and not (node.text or "").strip()
            ):
                node.set_content(outcome.caption.text)
        report.seconds = time.perf_counter() - started
        self._finish(report)
        kept = [
            n for n in nodes if self.include_images or not isinstance(n, (ImageNode, ImageDocument))
        ]
        return [*kept, *captions]

    # -- lower level: what the pack uses ------------------------------------------------

    def caption_images(
        self, images: Sequence[CaptionImage]
    ) -> tuple[list[CaptionOutcome], CaptionReport]:
        """Caption ``images`` (bytes or paths); one outcome per image, in order."""
        return asyncio_run(self.acaption_images(images))

    async def acaption_images(
        self, images: Sequence[CaptionImage]
    ) -> tuple[list[CaptionOutcome], CaptionReport]:
        report = CaptionReport(captioner=self.captioner.name)
        started = time.perf_counter()
        outcomes = await self._run(images, report)
        report.seconds = time.perf_counter() - started
        self._finish(report)
        return outcomes, report

    def caption_node(self, outcome: CaptionOutcome, image_node: BaseNode | None = None) -> TextNode:
        """The caption node for one outcome (its id is stable across runs)."""
        assert outcome.caption is not None
        image = outcome.image
        metadata = {
            "image_id": image.key,
            "image_path": image.path,
            "image_sha256": image.sha256,
            "captioner": self.captioner.name,
            "caption_source": self.captioner.source,
            "caption_language": getattr(self.captioner, "language", None) or "",
        }
        node = TextNode(
            id_=caption_node_id(image.key, self.captioner.cache_key),
            text=outcome.caption.text,
            metadata=metadata,
            excluded_embed_metadata_keys=list(CAPTION_METADATA_KEYS),
            excluded_llm_metadata_keys=list(CAPTION_METADATA_KEYS),
        )
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(
            node_id=image.key,
            node_type=ObjectType.IMAGE,
            metadata={"image_path": image.path} if image.path else {},
        )
        return node

    # -- the run --------------------------------------------------------------------------

    async def _run(
        self, images: Sequence[CaptionImage], report: CaptionReport
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

        async def worker() -> None:
            for group in queue:
                if fatal:
                    for image in group:
                        results[image.key] = CaptionOutcome(
                            image, failure=f"not attempted: {fatal[0]}"
                        )
                    continue
                loaded, unreadable = await self._load_group(group)
                for image in group:
                    if image.key in unreadable:
                        results[image.key] = CaptionOutcome(image, failure=unreadable[image.key])
                if loaded is None:
                    continue
                caption, failure = await self._caption_one(loaded, report, fatal)
                if caption is not None:
                    try:
                        await asyncio.to_thread(self.cache.put, loaded.sha256, key, name, caption)
                    except Exception as exc:  # disk full, database locked: keep the caption
                        logger.warning("Caption cache write failed (%s); continuing.", exc)
                for image in group:
                    if image.key not in unreadable:
                        results[image.key] = CaptionOutcome(image, caption, failure=failure)

        workers = min(self.concurrency, len(groups))
        await asyncio.gather(*(worker() for _ in range(workers)))
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
        """Up to 1 + max_retries attempts; returns (caption, failure)."""
        usage = report.usage
        attempt = 0
        while True:
            usage.calls += 1
            try:
                caption = await self.captioner.acaption(loaded, timeout=self.timeout)
            except Exception as exc:
                error = classify_error(exc, self.timeout)
                usage.failed_calls += 1
                if error.fatal:
                    if not fatal:
                        fatal.append(error.reason)
                        logger.error("Captioning stopped: %s", error.reason)
                    return None, error.reason
                if not error.retryable or attempt >= self.max_retries or fatal:
                    tries = f" (after {attempt + 1} attempts)" if attempt else ""
                    return None, f"{error.reason}{tries}"
                await asyncio.sleep(self._delay(attempt, error.retry_after))
                if fatal:  # another request found the key revoked meanwhile
                    return None, f"not retried: {fatal[0]}"
                attempt += 1
                usage.retries += 1
                continue
            usage.add(caption)
            if not caption.text and self.captioner.empty_is_failure:
                return None, "the model returned an empty caption"
            return caption, None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_retry_after, retry_after) * (1.0 + 0.1 * self._rng.random())
        return self._rng.uniform(0.0, min(self.backoff_max, self.backoff_base * 2**attempt))

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


def _path_of(node: ImageNode | ImageDocument) -> str:
    return str(node.image_path or node.metadata.get("file_path") or "")


def _image_of(node: ImageNode | ImageDocument, allow_urls: bool = False) -> CaptionImage:
    """A CaptionImage for a node: its file (hashed now, read later), bytes, or URL."""
    path = _path_of(node)
    if path:
        try:
            return CaptionImage(key=node.node_id, data=b"", sha256=file_sha256(path), path=path)
        except OSError as exc:
            raise CaptionError(f"cannot read file ({exc.strerror or exc})") from exc
    if node.image:
        try:
            data = base64.b64decode(node.image, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise CaptionError("image field is not base64") from exc
        return CaptionImage.from_bytes(node.node_id, data)
    if node.image_url:
        if not allow_urls:
            raise CaptionError(
                "image_url is not fetched unless allowed: download the image and pass its "
                "path, or use allow_image_urls=True (public addresses only)"
            )
        return CaptionImage.from_bytes(node.node_id, _download(str(node.image_url)))
    raise CaptionError("node has no image_path, image or image_url")


def _load(image: CaptionImage) -> CaptionImage:
    """The image with its bytes (read from its path when not in memory)."""
    if image.data:
        return image
    try:
        with open(image.path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CaptionError(f"cannot read file ({exc.strerror or exc})") from exc
    return CaptionImage.from_bytes(image.key, data, image.path)


def _download(url: str) -> bytes:
    try:
        return fetch_public_url(url, max_bytes=MAX_DOWNLOAD_BYTES, timeout=30)
    except UrlRefusedError as exc:
        raise CaptionError(f"image_url refused: {exc}") from exc
    except Exception as exc:
        raise CaptionError(f"cannot download image_url ({type(exc).__name__}: {exc})") from exc
