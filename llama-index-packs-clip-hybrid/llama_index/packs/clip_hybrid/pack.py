"""ClipHybridPack: a folder of images becomes a persistent, searchable CLIP index."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.retrievers.selfhit import (
    ImageQueryBundle,
    QueryImage,
    SelfHitFilteringRetriever,
    SelfHitReport,
    to_query_bundle,
)

from .captions.cache import default_cache_path
from .captions.embedding import (
    LOCAL_CAPTION_EMBED_MODEL,
    OPENAI_CAPTION_EMBED_MODEL,
    embedding_identity,
    local_embedding_available,
    resolve_caption_embedding,
)
from .captions.indexer import CaptionIndexer, reconcile_captions
from .captions.transform import VLMCaptionTransform, resolve_captioner
from .clip.embedding import DEFAULT_CLIP_MODEL, FastClipEmbedding, Precision
from .clip.no_clip import NO_CLIP, NoClipEmbedding, no_clip_error
from .hybrid.bm25 import CaptionBM25Index, CaptionText
from .hybrid.clip_retrievers import ClipImageToImageRetriever, ClipTextToImageRetriever
from .hybrid.fusion import (
    BRANCH_BM25,
    BRANCH_CAPTION,
    BRANCH_CLIP,
    DEFAULT_RRF_K,
    CaptionBM25Retriever,
    CaptionVectorRetriever,
    MilvusBM25Retriever,
    RRFFusionRetriever,
    hydrate,
)
from .ingest.ingestor import ImageIngestor, IngestReport
from .milvus.captions import DEFAULT_CAPTION_COLLECTION, CaptionStore
from .milvus.collection import CollectionMismatchError
from .milvus.database import DEFAULT_URI, is_local_uri
from .milvus.images import DEFAULT_COLLECTION, ImageStore

logger = logging.getLogger(__name__)


def _pack_base() -> Any:
    """``BaseLlamaPack`` on cores that still have it (<= 0.14.20, PR #21276), else object."""
    try:
        return importlib.import_module("llama_index.core.llama_pack").BaseLlamaPack
    except (ImportError, AttributeError):
        return object


_PackBase: Any = _pack_base()

Mode = Literal["auto", "text", "image", "hybrid"]


class ClipHybridPack(_PackBase):
    """Index images with CLIP in Milvus and search them by text or by image.

    Nothing is loaded or connected in the constructor: the CLIP model loads on the first
    embedding, the collection opens on the first ingest or search. A new process with the
    same ``uri`` searches right away, without re-ingesting.

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
        clip_model: A ``clip`` model name or a local checkpoint path; ``"none"`` for the
            caption-only mode (no CLIP: images are stored and captioned, search is hybrid
            over the caption branches; see :mod:`no_clip`).
        embed_model: Any ``MultiModalEmbedding`` instead of CLIP (overrides clip_model).
        device, precision: For the CLIP model, see :class:`FastClipEmbedding`.
        similarity_top_k: Results per query.
        keep_self_hit: Keep the query image in image->image results.
        batch_size: Images per ingestion chunk.
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
        clip_model: str = DEFAULT_CLIP_MODEL,
        embed_model: MultiModalEmbedding | None = None,
        device: str | None = None,
        precision: Precision = "auto",
        similarity_top_k: int = 5,
        keep_self_hit: bool = False,
        batch_size: int = 64,
        show_progress: bool | None = None,
        captioner: Any = None,
        caption_model: str | None = None,
        caption_lang: str | None = None,
        caption_embed: Any = "auto",
        caption_collection: str = DEFAULT_CAPTION_COLLECTION,
        caption_concurrency: int = 8,
        caption_cache_path: str | None = None,
        bm25: Literal["auto", "bm25s", "milvus"] = "auto",
    ) -> None:
        if similarity_top_k < 1:
            raise ValueError(f"similarity_top_k={similarity_top_k} must be >= 1.")
        self.store = ImageStore(uri=uri, token=token, collection_name=collection_name)
        self.embed_model: MultiModalEmbedding
        if embed_model is not None:
            self.embed_model = embed_model
        elif clip_model == NO_CLIP:
            self.embed_model = NoClipEmbedding()
        else:
            self.embed_model = FastClipEmbedding(
                model_name=clip_model, device=device, precision=precision
            )
        self.similarity_top_k = similarity_top_k
        self.keep_self_hit = keep_self_hit
        self.ingestor = ImageIngestor(
            store=self.store,
            embed_model=self.embed_model,
            batch_size=batch_size,
            show_progress=show_progress,
        )
        if bm25 not in ("auto", "bm25s", "milvus"):
            raise ValueError(f"bm25={bm25!r} is not one of 'auto', 'bm25s', 'milvus'.")
        self.bm25 = bm25
        self.caption_store = CaptionStore(
            self.store,
            collection_name=caption_collection,
            bm25="milvus" if bm25 == "milvus" else "bm25s",
        )
        # Resolved on first use: a search-only pack never builds an LLM client or loads
        # a text embedder.
        self._caption_choice = (
            captioner if captioner is not None else _env("CLIP_HYBRID_CAPTIONER", "auto")
        )
        self._caption_model = caption_model
        self._caption_lang = caption_lang
        self._caption_embed_choice = caption_embed
        self._caption_concurrency = caption_concurrency
        self._caption_cache_path = caption_cache_path or (
            f"{os.path.abspath(uri)}.captions.sqlite" if is_local_uri(uri) else None
        )
        self._caption_transform: VLMCaptionTransform | _Unset | None = _UNSET
        self._caption_embed_model: BaseEmbedding | _Unset | None = _UNSET
        self.bm25_path = (
            f"{os.path.abspath(uri)}.bm25"
            if is_local_uri(uri)
            else str(
                default_cache_path().parent
                / "bm25"
                / hashlib.sha256(f"{uri}|{caption_collection}".encode()).hexdigest()[:16]
            )
        )
        self._bm25: CaptionBM25Index | _Unset | None = _UNSET
        self.last_branches: list[str] = []

    @property
    def caption_transform(self) -> VLMCaptionTransform | None:
        """The captioning stage (None when captions are off); built on first use."""
        if isinstance(self._caption_transform, _Unset):
            resolved = resolve_captioner(
                self._caption_choice, model=self._caption_model, language=self._caption_lang
            )
            self._caption_transform = (
                VLMCaptionTransform(
                    resolved,
                    concurrency=self._caption_concurrency,
                    cache_path=self._caption_cache_path,
                )
                if resolved is not None
                else None
            )
        return self._caption_transform

    @property
    def caption_embed_model(self) -> BaseEmbedding | None:
        """The caption text embedder (None: captions kept for BM25 only); built on first use."""
        if isinstance(self._caption_embed_model, _Unset):
            choice = self._caption_embed_choice
            if choice == "auto":  # follow the model that built the existing captions
                choice = _embed_choice_for(self.caption_store.model) or "auto"
            self._caption_embed_model = resolve_caption_embedding(choice)
        return self._caption_embed_model

    def __repr__(self) -> str:
        return f"ClipHybridPack(store={self.store!r}, model={self.embed_model.model_name!r})"

    # -- pack protocol -------------------------------------------------------------------

    def get_modules(self) -> dict[str, Any]:
        """The parts, by name, for use in your own pipelines."""
        image = self.image_retriever(keep_self_hit=True)
        return {
            "embed_model": self.embed_model,
            "store": self.store,
            "ingestor": self.ingestor,
            "text_retriever": self.text_retriever(),
            "image_retriever": SelfHitFilteringRetriever(image),
            "image_retriever_unfiltered": image,
            "caption_transform": self.caption_transform,
            "caption_store": self.caption_store,
            "caption_embed_model": self.caption_embed_model,
            "branch_retrievers": self.hybrid_branches(),
            "hybrid_retriever": self._hybrid_or_none(),
        }

    def _hybrid_or_none(self) -> RRFFusionRetriever | None:
        try:
            return self.hybrid_retriever()
        except ValueError:  # nothing indexed yet
            return None

    def run(self, query: Any, *, mode: Mode = "auto", **kwargs: Any) -> list[NodeWithScore]:
        """Search: same as :meth:`retrieve`."""
        return self.retrieve(query, mode=mode, **kwargs)

    # -- ingestion -----------------------------------------------------------------------

    def ingest(
        self,
        inputs: Any,
        *,
        sync: bool = False,
        recursive: bool = True,
        overwrite: bool = False,
    ) -> IngestReport:
        """Index image files, folders or image nodes (see :class:`ImageIngestor`), then
        caption what has no up-to-date caption (see :class:`CaptionIndexer`).

        A failed caption never fails the run: the image stays indexed by CLIP, the
        failure is in ``report.captions.failed``, and the next run retries it.
        ``overwrite=True`` drops the existing collections first (everything is lost).
        """
        if overwrite:
            self.caption_store.drop()
            self.store.drop()
            shutil.rmtree(self.bm25_path, ignore_errors=True)
            self._bm25 = _UNSET
        report = self.ingestor.ingest(inputs, sync=sync, recursive=recursive)
        transform = self.caption_transform
        if transform is None and self.caption_store.open_existing():
            # Captions off this run: still drop caption rows of removed or changed images.
            rows = {r["id"]: r for r in self.store.iter_rows(["sha256"])}
            have = reconcile_captions(self.caption_store, rows)
            changed = [cid for cid, (sha, _) in have.items() if rows[cid]["sha256"] != sha]
            if changed:
                self.caption_store.delete(changed)
            if not self._uses_milvus_bm25():
                self.refresh_bm25()
        if transform is not None:
            indexer = CaptionIndexer(
                images=self.store,
                captions=self.caption_store,
                transform=transform,
                embed_model=self.caption_embed_model,
            )
            report.captions = indexer.update()
            if not self._uses_milvus_bm25():
                self.refresh_bm25()
        return report

    def _uses_milvus_bm25(self) -> bool:
        """Milvus' own BM25 when asked for, or (auto) when the collection has it."""
        if self.bm25 == "auto":
            return self.caption_store.has_milvus_bm25()
        return self.bm25 == "milvus"

    # -- BM25 over captions --------------------------------------------------------------

    def refresh_bm25(self) -> CaptionBM25Index | None:
        """Rebuild the BM25 index from the caption collection when captions changed (only
        new or changed captions are segmented again) and persist it beside the data."""
        if not self.caption_store.open_existing():
            self._bm25 = None
            return None
        previous = self._bm25 if isinstance(self._bm25, CaptionBM25Index) else None
        if previous is None:
            previous = CaptionBM25Index.load(self.bm25_path)
        rows = self.caption_store.iter_rows(["text", "sha256", "cache_key"])
        captions = [
            CaptionText(r["id"], r["text"], f"{r['sha256']}:{r['cache_key']}") for r in rows
        ]
        if previous is not None and previous.stamps == {c.image_id: c.stamp for c in captions}:
            self._bm25 = previous
            return previous
        index = CaptionBM25Index.build(captions, previous=previous)
        index.persist(self.bm25_path)
        self._bm25 = index
        return index

    def bm25_index(self) -> CaptionBM25Index | None:
        """The persisted BM25 index (loaded once, no tokenizing), built when missing; None
        without a caption collection (an index left beside a deleted database must not
        answer for the images indexed again under the same ids)."""
        if not self.caption_store.open_existing():
            return None
        if isinstance(self._bm25, _Unset):
            loaded = CaptionBM25Index.load(self.bm25_path)
            self._bm25 = loaded if loaded is not None else self.refresh_bm25()
        return self._bm25

    # -- retrieval -----------------------------------------------------------------------

    def text_retriever(
        self,
        *,
        similarity_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        read_rows: bool = True,
    ) -> ClipTextToImageRetriever:
        """CLIP text->image; ``read_rows=False`` returns id-only nodes (for a fusion that
        reads the rows of its final top-k, as :meth:`hybrid_retriever` does)."""
        return ClipTextToImageRetriever(
            store=self.store,
            embed_model=self.embed_model,
            similarity_top_k=similarity_top_k or self.similarity_top_k,
            filters=filters,
            read_rows=read_rows,
        )

    def image_retriever(
        self,
        *,
        similarity_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        keep_self_hit: bool | None = None,
    ) -> ClipImageToImageRetriever | SelfHitFilteringRetriever:
        inner = ClipImageToImageRetriever(
            store=self.store,
            embed_model=self.embed_model,
            similarity_top_k=similarity_top_k or self.similarity_top_k,
            filters=filters,
        )
        keep = self.keep_self_hit if keep_self_hit is None else keep_self_hit
        return inner if keep else SelfHitFilteringRetriever(inner)

    def hybrid_branches(
        self,
        *,
        candidates: int = 50,
        filters: MetadataFilters | None = None,
        query_image: Any = None,
        keep_self_hit: bool | None = None,
    ) -> dict[str, BaseRetriever]:
        """The branches that can run now, by name: ``clip`` (text->image, or image->image
        when ``query_image`` is given, self-hit filtered), ``caption_vector`` and ``bm25``.

        As inside the fusion, text-query branches return image nodes with ids and scores
        only (the fusion reads the rows of its final top-k, :func:`hydrate`); use
        :meth:`text_retriever` for full nodes."""
        keep = self.keep_self_hit if keep_self_hit is None else keep_self_hit
        filter_self = query_image is not None and not keep
        branches: dict[str, BaseRetriever] = {}
        if self.store.open_existing() and not self.has_no_clip:
            clip: BaseRetriever
            if query_image is not None:
                clip = self.image_retriever(
                    similarity_top_k=candidates, filters=filters, keep_self_hit=keep
                )
            else:
                clip = self.text_retriever(
                    similarity_top_k=candidates, filters=filters, read_rows=False
                )
            branches[BRANCH_CLIP] = clip
        common = {
            "images": self.store,
            "similarity_top_k": candidates,
            "filters": filters,
            "read_rows": filter_self,
        }
        caption_branches: dict[str, BaseRetriever] = {}
        embed = self._caption_branch_model()
        if embed is not None:
            caption_branches[BRANCH_CAPTION] = CaptionVectorRetriever(
                captions=self.caption_store, embed_model=embed, **common
            )
        if self._uses_milvus_bm25():
            if self.caption_store.has_milvus_bm25():
                caption_branches[BRANCH_BM25] = MilvusBM25Retriever(
                    captions=self.caption_store, **common
                )
        else:
            index = self.bm25_index()
            if index is not None and len(index):
                caption_branches[BRANCH_BM25] = CaptionBM25Retriever(index=index, **common)
        for name, retriever in caption_branches.items():
            branches[name] = SelfHitFilteringRetriever(retriever) if filter_self else retriever
        return branches

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
        ``retriever.branch_names`` says which ran; ``branches`` restricts them (for
        example ``("caption_vector", "bm25")`` for captions only). See
        :class:`RRFFusionRetriever`.
        """
        top_k = similarity_top_k or self.similarity_top_k
        available = self.hybrid_branches(
            candidates=max(candidates, top_k),
            filters=filters,
            query_image=query_image,
            keep_self_hit=keep_self_hit,
        )
        if branches is not None:
            unknown = set(branches) - {BRANCH_CLIP, BRANCH_CAPTION, BRANCH_BM25}
            if unknown:
                raise ValueError(f"unknown branches {sorted(unknown)}")
            available = {k: v for k, v in available.items() if k in branches}
        if not available:
            raise ValueError(
                f"No retrieval branch can run on {self.store.uri}: ingest first (captions "
                "need a captioner, and a caption embedder for their vectors)."
            )
        if weights:
            unknown = set(weights) - {BRANCH_CLIP, BRANCH_CAPTION, BRANCH_BM25}
            if unknown:
                raise ValueError(f"weights for unknown branches: {sorted(unknown)}")
            weights = {k: v for k, v in weights.items() if k in available}
        return RRFFusionRetriever(
            available,
            similarity_top_k=top_k,
            rrf_k=rrf_k,
            weights=weights,
            finish=partial(hydrate, self.store),
        )

    def _caption_branch_model(self) -> BaseEmbedding | None:
        if not self.caption_store.open_existing():
            return None
        model = self.caption_embed_model
        if model is None:
            return None
        recorded = self.caption_store.model
        if recorded and recorded != embedding_identity(model):
            logger.warning(
                "Caption vectors were made by %s but the caption embedder is %s: the "
                "caption-vector branch is skipped (pass caption_embed=... to match).",
                recorded,
                embedding_identity(model),
            )
            return None
        return model

    def _hybrid_image_bundle(self, bundle: QueryBundle) -> QueryBundle:
        """The image query plus the caption of its bytes (stored or cached) as text, so
        the caption branches can take part; without one only CLIP runs."""
        image = QueryImage.from_query_bundle(bundle)
        data = b""
        if image is not None:
            data = image.data or (Path(image.path).read_bytes() if image.path else b"")
        digest = hashlib.sha256(data).hexdigest() if data else ""
        text = self.caption_store.text_for_sha256(digest) if digest else None
        transform = self.caption_transform if text is None and digest else None
        if transform is not None:
            cached = transform.cache.get_many([digest], transform.captioner.cache_key)
            text = cached[digest].text if digest in cached else None
        bundle.query_str = text or ""
        return bundle

    def retrieve(
        self,
        query: Any,
        *,
        mode: Mode = "auto",
        similarity_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        keep_self_hit: bool | None = None,
    ) -> list[NodeWithScore]:
        """Text->image or image->image results with their real cosine scores.

        ``mode="auto"`` treats paths, bytes, PIL images, image nodes and bundles with an
        ``image_path`` as image queries, and any other text as a text query.
        """
        retriever, bundle = self._route(query, mode, similarity_top_k, filters, keep_self_hit)
        return retriever.retrieve(bundle)

    async def aretrieve(
        self,
        query: Any,
        *,
        mode: Mode = "auto",
        similarity_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        keep_self_hit: bool | None = None,
    ) -> list[NodeWithScore]:
        """Async :meth:`retrieve`."""
        retriever, bundle = self._route(query, mode, similarity_top_k, filters, keep_self_hit)
        return await retriever.aretrieve(bundle)

    def search(self, query: Any, **kwargs: Any) -> tuple[list[NodeWithScore], SelfHitReport | None]:
        """:meth:`retrieve` plus the self-hit report of an image query (None for text)."""
        mode = kwargs.pop("mode", "auto")
        retriever, bundle = self._route(
            query,
            mode,
            kwargs.pop("similarity_top_k", None),
            kwargs.pop("filters", None),
            kwargs.pop("keep_self_hit", None),
        )
        if kwargs:
            raise TypeError(f"Unexpected options: {', '.join(kwargs)}")
        hits = retriever.retrieve(bundle)
        report = retriever.last_report if isinstance(retriever, SelfHitFilteringRetriever) else None
        return hits, report

    def _route(
        self,
        query: Any,
        mode: Mode,
        similarity_top_k: int | None,
        filters: MetadataFilters | None,
        keep_self_hit: bool | None,
    ) -> tuple[Any, QueryBundle]:
        if mode not in ("auto", "text", "image", "hybrid"):
            raise ValueError(f"mode={mode!r} is not one of 'auto', 'text', 'image', 'hybrid'.")
        self._check_ready()
        if mode == "hybrid":
            bundle = to_query_bundle(query)
            is_image = isinstance(bundle, ImageQueryBundle) or bool(bundle.image_path)
            if is_image:
                bundle = self._hybrid_image_bundle(bundle)
                if self.has_no_clip and not bundle.query_str:
                    raise ValueError(
                        "Without CLIP (clip_model='none') an image query needs a caption of "
                        "that image: index and caption it first, or use a CLIP model."
                    )
            elif not bundle.query_str.strip():
                raise ValueError("The text query is empty; type something to search for.")
            retriever = self.hybrid_retriever(
                similarity_top_k=similarity_top_k,
                filters=filters,
                query_image=bundle if is_image else None,
                keep_self_hit=keep_self_hit,
            )
            self.last_branches = list(retriever.branch_names)
            return retriever, bundle
        if self.has_no_clip:
            if mode != "auto":
                raise no_clip_error()
            return self._route(query, "hybrid", similarity_top_k, filters, keep_self_hit)
        if mode == "text":
            if not isinstance(query, (str, QueryBundle)):
                raise ValueError(f"mode='text' needs a string query, got {type(query).__name__}.")
            bundle = query if isinstance(query, QueryBundle) else QueryBundle(query_str=query)
        elif mode == "image" and isinstance(query, str):
            bundle = to_query_bundle(Path(query))
        else:
            bundle = to_query_bundle(query)
        is_image = isinstance(bundle, ImageQueryBundle) or bool(bundle.image_path)
        if mode == "image" and not is_image:
            raise ValueError("mode='image' needs an image: a path, bytes, a PIL image or node.")
        if is_image:
            return self.image_retriever(
                similarity_top_k=similarity_top_k, filters=filters, keep_self_hit=keep_self_hit
            ), bundle
        return self.text_retriever(similarity_top_k=similarity_top_k, filters=filters), bundle

    @property
    def has_no_clip(self) -> bool:
        """True in the caption-only mode (``clip_model="none"``)."""
        return isinstance(self.embed_model, NoClipEmbedding)

    def _check_ready(self) -> None:
        if not self.store.open_existing():
            return  # an empty index: searches return nothing
        self.store.check_model(self.embed_model.model_name)
        dim = self.store.dim
        model_dim = _model_dim(self.embed_model)
        if dim is not None and model_dim is not None and dim != model_dim:
            raise CollectionMismatchError(
                f"Collection {self.store.collection_name!r} at {self.store.uri} holds {dim}-dim "
                f"vectors but the model {self.embed_model.model_name!r} makes {model_dim}-dim "
                "ones; search with the model that built the index."
            )


class _Unset:
    """Marks a lazily built attribute that has not been built yet."""


_UNSET = _Unset()


def _embed_choice_for(recorded: str | None) -> str | None:
    """The ``caption_embed`` choice that reproduces a recorded caption model, if usable."""
    if recorded == OPENAI_CAPTION_EMBED_MODEL and os.environ.get("OPENAI_API_KEY"):
        return "openai"
    if recorded == LOCAL_CAPTION_EMBED_MODEL and local_embedding_available():
        return "local"
    return None


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _model_dim(model: MultiModalEmbedding) -> int | None:
    if isinstance(model, FastClipEmbedding):
        return model.embed_dim
    return None
