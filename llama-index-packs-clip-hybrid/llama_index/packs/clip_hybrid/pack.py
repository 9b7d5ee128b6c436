"""ClipHybridPack: a folder of images becomes a persistent index searched by text or by image."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import NodeWithScore
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.retrievers.selfhit import SelfHitFilteringRetriever

from ._compat.core_packs import pack_base
from .captions.stage import CaptionStage
from .captions.transform import VLMCaptionTransform
from .clip.embedding import FastClipEmbedding, Precision
from .clip.no_clip import NO_CLIP, NoClipEmbedding
from .events import dispatcher
from .hybrid.bm25 import PersistentBM25, default_bm25_path
from .hybrid.builder import BM25Choice, LateHybridRetriever, RetrieverBuilder
from .hybrid.clip_retrievers import ClipImageToImageRetriever, ClipTextToImageRetriever
from .hybrid.fusion import RRFFusionRetriever
from .ingest.ingestor import ImageIngestor
from .ingest.rebuild import built_beside
from .ingest.removal import DeleteReport, delete_images, with_an_image
from .ingest.report import IngestReport
from .milvus.captions import CaptionStore
from .milvus.database import is_local_uri
from .milvus.images import ImageStore
from .milvus.vector_store import llama_vector_store
from .options import (
    DEFAULT_CAPTION_COLLECTION,
    DEFAULT_CLIP_MODEL,
    DEFAULT_COLLECTION,
    DEFAULT_RRF_K,
    DEFAULT_URI,
    Mode,
    OptionError,
    check_top_k,
    check_workers,
)
from .redaction import package_logger
from .results import SearchResult
from .routing import route_search

if TYPE_CHECKING:
    from .answering import ImageQueryEngine

logger = package_logger(__name__)


class ClipHybridPack(pack_base()):  # type: ignore[misc]
    """Index images with CLIP in Milvus and search them by text, by image, or both.

    Nothing is loaded or connected in the constructor: the CLIP model loads on the first
    embedding, the collection opens on the first ingest or search. A new process with the
    same ``uri`` searches right away, with the model the index was built with.

    Example:
        >>> pack = ClipHybridPack(uri="./clip_hybrid.db")
        >>> pack.ingest("photos/")  # doctest: +SKIP
        IngestReport(indexed=120, unchanged=0, ...)
        >>> pack.run("a system architecture diagram")  # doctest: +SKIP
        >>> pack.run(Path("photos/cat.png"))  # image->image, the query itself filtered
        ... # doctest: +SKIP

    Args:
        uri: Milvus Lite path (default ``./clip_hybrid.db``) or ``http(s)://host:19530``.
        token: Milvus server token (never stored or printed).
        collection_name: The image collection.
        clip_model: A CLIP model name (``ViT-B/32``, ...) or a local checkpoint path;
            ``"none"`` for the caption-only mode (no CLIP: images are stored and captioned,
            search runs the caption branches); None (default): the model the index was
            built with, else ``ViT-B/32``.
        embed_model: Any ``MultiModalEmbedding`` instead of CLIP (overrides clip_model).
        device, precision: For the CLIP model, see :class:`FastClipEmbedding`.
        similarity_top_k: Results per query.
        keep_self_hit: Keep the query image in image->image results.
        batch_size, workers: Images per ingestion chunk; decode threads (default: the cores).
        show_progress: Progress bar on ingestion (None: only on a terminal).
        captioner: ``auto`` (default; env ``CLIP_HYBRID_CAPTIONER``): GPT-4o when
            ``OPENAI_API_KEY`` is set, else Qwen-VL-Max when ``DASHSCOPE_API_KEY`` is set,
            else offline OCR when installed, else none. Or ``openai``, ``dashscope``,
            ``ocr``, ``none``, a :class:`Captioner`, or a LlamaIndex LLM taking images.
        caption_model, caption_lang: The VLM model and caption language (e.g. ``zh``).
        caption_embed: ``auto`` (the model that made the existing caption vectors when it
            is usable, else text-embedding-3-small with a key, else the bundled
            all-MiniLM-L6-v2), ``openai``, ``local``, ``none``, or any ``BaseEmbedding``.
        caption_collection: The caption collection, in the same ``uri``.
        caption_concurrency: Caption requests in flight.
        caption_cache_path: The caption cache (default: beside a Milvus Lite path, else
            the user cache folder).
        bm25: ``bm25s`` (in-process, persisted beside the data), ``milvus`` (Milvus' own
            BM25 function on the caption collection, for servers and clusters; set when
            the collection is created), or ``auto`` (default: whichever the collection has).
    """

    def __init__(
        self,
        *,
        uri: str = DEFAULT_URI,
        token: str | None = None,
        collection_name: str = DEFAULT_COLLECTION,
        clip_model: str | None = None,
        embed_model: MultiModalEmbedding | None = None,
        device: str | None = None,
        precision: Precision = "auto",
        similarity_top_k: int = 5,
        keep_self_hit: bool = False,
        batch_size: int = 64,
        workers: int | None = None,
        show_progress: bool | None = None,
        captioner: Any = None,
        caption_model: str | None = None,
        caption_lang: str | None = None,
        caption_embed: Any = "auto",
        caption_collection: str = DEFAULT_CAPTION_COLLECTION,
        caption_concurrency: int = 8,
        caption_cache_path: str | None = None,
        bm25: BM25Choice = "auto",
    ) -> None:
        self.similarity_top_k = check_top_k(similarity_top_k)
        check_top_k(batch_size, option="batch_size")
        check_workers(workers)
        if bm25 not in ("auto", "bm25s", "milvus"):
            raise OptionError(f"{{bm25}} must be one of 'auto', 'bm25s', 'milvus'; got {bm25!r}.")
        self.keep_self_hit = keep_self_hit
        self.store = ImageStore(uri=uri, token=token, collection_name=collection_name)
        self.caption_store = CaptionStore(
            self.store,
            collection_name=caption_collection,
            bm25="milvus" if bm25 == "milvus" else "bm25s",
        )
        self._clip_model = clip_model
        self._device = device
        self._precision: Precision = precision
        self._embed_model = embed_model
        self._model_given = embed_model is not None
        options = {"batch_size": batch_size, "workers": workers, "show_progress": show_progress}
        self._ingest_options: dict[str, Any] = options
        self._ingestor: ImageIngestor | None = None
        self.captions = CaptionStage(
            images=self.store,
            captions=self.caption_store,
            captioner=captioner or os.environ.get("CLIP_HYBRID_CAPTIONER") or "auto",
            caption_model=caption_model,
            caption_lang=caption_lang,
            caption_embed=caption_embed,
            concurrency=caption_concurrency,
            cache_path=caption_cache_path
            or (f"{os.path.abspath(uri)}.captions.sqlite" if is_local_uri(uri) else None),
            show_progress=show_progress,
        )
        self.bm25 = PersistentBM25(self.caption_store, default_bm25_path(uri, caption_collection))
        self._bm25_backend: BM25Choice = bm25

    def __repr__(self) -> str:
        return f"ClipHybridPack(store={self.store!r}, clip_model={self._clip_model!r})"

    # -- the parts -------------------------------------------------------------------------

    @property
    def embed_model(self) -> MultiModalEmbedding:
        """The image-side model: the one given, else CLIP (``clip_model``, or the model the
        index was built with), or the no-CLIP placeholder. Built (not loaded) on first use."""
        if self._embed_model is None:
            name = self._clip_model or self.store.model or DEFAULT_CLIP_MODEL
            if name == NO_CLIP:
                self._embed_model = NoClipEmbedding()
            else:
                self._embed_model = FastClipEmbedding(
                    model_name=name, device=self._device, precision=self._precision
                )
        return self._embed_model

    @property
    def model_given(self) -> bool:
        """True when the image-side model was given (``clip_model`` or ``embed_model``),
        False when it is the one the index was built with."""
        return self._clip_model is not None or self._model_given

    @property
    def has_no_clip(self) -> bool:
        """True in the caption-only mode (``clip_model="none"``, or such an index)."""
        return isinstance(self.embed_model, NoClipEmbedding)

    @property
    def ingestor(self) -> ImageIngestor:
        if self._ingestor is None:
            self._ingestor = ImageIngestor(
                store=self.store,
                embed_model=self.embed_model,
                **self._ingest_options,
            )
        return self._ingestor

    @property
    def caption_transform(self) -> VLMCaptionTransform | None:
        """The captioning step (None when captions are off); built on first use."""
        return self.captions.transform

    @property
    def caption_embed_model(self) -> BaseEmbedding | None:
        """The caption embedder (None: captions for BM25 only); built on first use."""
        return self.captions.embed_model

    @property
    def bm25_path(self) -> str:
        return self.bm25.path

    @property
    def retrievers(self) -> RetrieverBuilder:
        """Builds this index's retrievers (see :class:`RetrieverBuilder`)."""
        return RetrieverBuilder(
            images=self.store,
            captions=self.caption_store,
            embed_model=None if self.has_no_clip else self.embed_model,
            caption_embed=self.captions.search_embed_model,
            bm25=self.bm25,
            bm25_backend=self._bm25_backend,
            similarity_top_k=self.similarity_top_k,
            keep_self_hit=self.keep_self_hit,
            caption_of=self.captions.caption_of,
        )

    def close(self) -> None:
        """Close the database (Milvus Lite: frees it for another process) and the
        caption cache."""
        self.captions.close()
        self.caption_store.close()
        self.store.close()

    def __enter__(self) -> ClipHybridPack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pack protocol -------------------------------------------------------------------

    def get_modules(self) -> dict[str, Any]:
        """The parts, by name, for use in your own pipelines."""
        build = self.retrievers
        image = build.image_retriever(keep_self_hit=True)
        try:
            hybrid: BaseRetriever = build.hybrid_retriever()
        except OptionError:  # nothing indexed yet: built at each call from what is then
            hybrid = LateHybridRetriever(lambda: self.retrievers.hybrid_retriever())
        return {
            "embed_model": self.embed_model,
            "store": self.store,
            "ingestor": self.ingestor,
            "text_retriever": build.text_retriever() if not self.has_no_clip else None,
            "image_retriever": SelfHitFilteringRetriever(image),
            "image_retriever_unfiltered": image,
            "caption_transform": self.caption_transform,
            "caption_store": self.caption_store,
            "caption_embed_model": self.caption_embed_model,
            "branch_retrievers": build.branches(),
            "hybrid_retriever": hybrid,
        }

    def run(self, query: Any, *, mode: Mode = "auto", **kwargs: Any) -> list[NodeWithScore]:
        """Search (see :meth:`search`): a text query runs hybrid when captions can answer,
        CLIP alone otherwise; an image query runs image->image. Which ran is logged (INFO);
        :meth:`search` returns it with the hits."""
        result = self.search(query, mode=mode, **kwargs)
        logger.info("Search ran %s (%s).", result.mode, ", ".join(result.branches))
        return result.hits

    # -- ingestion -----------------------------------------------------------------------

    @dispatcher.span
    def ingest(
        self,
        inputs: Any,
        *,
        sync: bool = False,
        recursive: bool = True,
        overwrite: bool = False,
    ) -> IngestReport:
        """Index image files, folders or image nodes (see :class:`ImageIngestor`), then
        caption what has no up-to-date caption (see :class:`CaptionStage`).

        A failed caption never fails the run: the image stays indexed by CLIP, the
        failure is in ``report.captions.failed``, and the next run retries it.
        ``overwrite=True`` replaces the index: built beside it, swapped in when done.
        """
        with self.store.ingesting:  # two at once (aingest): a new collection made twice
            inputs = with_an_image(inputs, recursive=recursive) if overwrite else inputs
            with built_beside([self.store, self.caption_store], self.bm25, rebuild=overwrite):
                report = self.ingestor.ingest(inputs, sync=sync, recursive=recursive)
                report.captions = self.captions.update()
                if not self.retrievers.uses_milvus_bm25():
                    self.bm25.refresh()
        return report

    async def aingest(self, inputs: Any, **kwargs: Any) -> IngestReport:
        """Async :meth:`ingest` (it runs on a worker thread)."""
        return await asyncio.to_thread(self.ingest, inputs, **kwargs)

    @dispatcher.span
    def delete(self, items: Any) -> DeleteReport:
        """Remove images (ids, file paths, folders or result nodes) and their captions;
        an item that names nothing indexed is reported (see :func:`delete_images`)."""
        report = delete_images(self.store, self.caption_store, items)
        if report.removed and not self.retrievers.uses_milvus_bm25():
            self.bm25.refresh()
        return report

    # -- retrievers ----------------------------------------------------------------------

    def text_retriever(self, **kwargs: Any) -> ClipTextToImageRetriever:
        """CLIP text->image (see :meth:`RetrieverBuilder.text_retriever`)."""
        return self.retrievers.text_retriever(**kwargs)

    def image_retriever(
        self, **kwargs: Any
    ) -> ClipImageToImageRetriever | SelfHitFilteringRetriever:
        """CLIP image->image (see :meth:`RetrieverBuilder.image_retriever`)."""
        return self.retrievers.image_retriever(**kwargs)

    def hybrid_branches(self, **kwargs: Any) -> dict[str, BaseRetriever]:
        """The branches that can run now (see :meth:`RetrieverBuilder.branches`)."""
        return self.retrievers.branches(**kwargs)

    def hybrid_retriever(self, **kwargs: Any) -> RRFFusionRetriever:
        """The fused retriever (see :meth:`RetrieverBuilder.hybrid_retriever`)."""
        return self.retrievers.hybrid_retriever(**kwargs)

    def vector_store(self, collection: str = "images", **kwargs: Any) -> Any:
        """LlamaIndex's ``MilvusVectorStore`` over the ``images`` (CLIP vectors) or
        ``captions`` (caption vectors) collection, for ``VectorStoreIndex`` and
        ``MultiModalVectorStoreIndex``; ``kwargs`` go to the store. Write through the pack:
        the store reads (see :mod:`.milvus.vector_store`)."""
        return llama_vector_store(
            {"images": self.store, "captions": self.caption_store}, collection, **kwargs
        )

    def as_query_engine(self, llm: Any = None, **kwargs: Any) -> ImageQueryEngine:
        """Answers from the images found: the hybrid retriever (``kwargs``), then ``llm``
        (default ``Settings.llm``) with images and captions (see :mod:`.answering`)."""
        from .answering import ImageQueryEngine

        return ImageQueryEngine.over(self, llm, **kwargs)

    # -- search --------------------------------------------------------------------------

    def retrieve(self, query: Any, **kwargs: Any) -> list[NodeWithScore]:
        """Text->image, image->image or hybrid results with their real scores.

        ``mode="auto"`` treats paths, bytes, PIL images, image nodes and bundles with an
        ``image_path`` as image queries, and any other text as a text query. See
        :meth:`search` for the options.
        """
        return self.search(query, **kwargs).hits

    async def aretrieve(self, query: Any, **kwargs: Any) -> list[NodeWithScore]:
        """Async :meth:`retrieve`."""
        return (await self.asearch(query, **kwargs)).hits

    def search(
        self,
        query: Any,
        *,
        mode: Mode = "auto",
        similarity_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        keep_self_hit: bool | None = None,
        branches: Sequence[str] | None = None,
        rrf_k: float = DEFAULT_RRF_K,
    ) -> SearchResult:
        """Search and say what ran: the hits, the mode, the branches (hybrid), the
        branches that failed while the others answered, and the self-hits dropped.

        Args:
            query: Text, or an image (path, bytes, PIL image, image node, bundle).
            mode: ``auto``, ``text`` (CLIP), ``image`` (CLIP), ``hybrid`` (RRF over CLIP,
                caption vectors and BM25).
            branches: The hybrid branches to run (default: every one that can).
        """
        return route_search(
            self,
            query,
            mode=mode,
            similarity_top_k=similarity_top_k,
            filters=filters,
            keep_self_hit=keep_self_hit,
            branches=branches,
            rrf_k=rrf_k,
        ).run()

    async def asearch(self, query: Any, **kwargs: Any) -> SearchResult:
        """Async :meth:`search`."""
        route = await asyncio.to_thread(route_search, self, query, **kwargs)
        return await route.arun()
