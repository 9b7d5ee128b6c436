"""CaptionStage: a pack's captioning, chosen on first use and kept in step with its images.

It owns what :class:`ClipHybridPack` needs of captions: which captioner and which caption
embedder (``auto`` follows the model that made the stored caption vectors), captioning
what changed after an ingestion, pruning caption rows when captions are off, the caption
embedder a search may use, and the caption of an image query's bytes.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding

from .._util import chunks
from ..events import IngestEndEvent, dispatcher
from ..milvus.captions import CaptionStore
from ..milvus.images import ImageStore
from ..redaction import package_logger
from .choice import choose_captioner
from .embedding import (
    LOCAL_CAPTION_EMBED_MODEL,
    NO_CAPTION_VECTORS,
    OPENAI_CAPTION_EMBED_MODEL,
    EmbedChoice,
    build_caption_embedding,
    caption_embedding_choice,
    choice_identity,
    local_embedding_available,
)
from .indexer import CaptionIndexer, reconcile_captions
from .report import CaptionReport
from .transform import VLMCaptionTransform

logger = package_logger(__name__)


class _Unset:
    """Marks a lazily built attribute that has not been built yet."""


_UNSET = _Unset()


class CaptionStage:
    """The captions of one image collection.

    Args:
        images, captions: The image collection and its caption collection.
        captioner: ``auto``, ``openai``, ``dashscope``, ``ocr``, ``none``, a Captioner
            or an LLM taking images (see :func:`.choice.resolve_captioner`).
        caption_model, caption_lang: The VLM model and caption language.
        caption_embed: ``auto``, ``openai``, ``local``, ``none`` or a ``BaseEmbedding``.
        concurrency: Caption requests in flight.
        cache_path: The caption cache (None: the user cache folder).
        show_progress: A captioning progress bar on stderr (None: only on a terminal).
    """

    def __init__(
        self,
        *,
        images: ImageStore,
        captions: CaptionStore,
        captioner: Any = "auto",
        caption_model: str | None = None,
        caption_lang: str | None = None,
        caption_embed: Any = "auto",
        concurrency: int = 8,
        cache_path: str | None = None,
        show_progress: bool | None = None,
    ) -> None:
        self.images = images
        self.captions = captions
        self._captioner = captioner
        self._model = caption_model
        self._lang = caption_lang
        self._embed_choice = caption_embed
        self._concurrency = concurrency
        self._cache_path = cache_path
        self.show_progress = show_progress
        self._transform: VLMCaptionTransform | _Unset | None = _UNSET
        self._resolved_embed: EmbedChoice | _Unset = _UNSET
        self._embed_model: BaseEmbedding | _Unset | None = _UNSET
        #: Where the captioner and the caption embedder came from (see the report).
        self.captioner_source = ""
        self.embed_source = ""
        self._mismatch_warned = False

    @property
    def transform(self) -> VLMCaptionTransform | None:
        """The captioning step (None when captions are off); built on first use."""
        if isinstance(self._transform, _Unset):
            resolved, self.captioner_source = choose_captioner(
                self._captioner, model=self._model, language=self._lang
            )
            self._transform = (
                VLMCaptionTransform(
                    resolved, concurrency=self._concurrency, cache_path=self._cache_path
                )
                if resolved is not None
                else None
            )
        return self._transform

    @property
    def embed_choice(self) -> EmbedChoice:
        """Which caption embedder (resolved, not built): ``auto`` takes the model that
        made the stored caption vectors when it is usable here."""
        if isinstance(self._resolved_embed, _Unset):
            choice = self._embed_choice
            recorded = _embed_choice_for(self.captions.model) if choice == "auto" else None
            self._resolved_embed, self.embed_source = caption_embedding_choice(recorded or choice)
            if recorded:
                self.embed_source = "the stored caption vectors"
        return self._resolved_embed

    @property
    def embed_model(self) -> BaseEmbedding | None:
        """The caption embedder (None: captions for BM25 only); a local model loads here."""
        if isinstance(self._embed_model, _Unset):
            self._embed_model = build_caption_embedding(self.embed_choice)
        return self._embed_model

    # -- ingestion -----------------------------------------------------------------------

    def update(self) -> CaptionReport | None:
        """Caption the images whose caption is missing or stale and store the captions
        (None when captions are off: then only rows of removed or changed images go)."""
        transform = self.transform
        if transform is None:
            self.prune()
            return None
        indexer = CaptionIndexer(
            images=self.images,
            captions=self.captions,
            transform=transform,
            embed=self.embed_choice if isinstance(self._embed_model, _Unset) else self._embed_model,
            show_progress=_on_a_terminal() if self.show_progress is None else self.show_progress,
        )
        report = indexer.update()
        report.captioner_source = self.captioner_source
        report.embed_model = choice_identity(self.embed_choice)
        report.embed_source = self.embed_source
        dispatcher.event(IngestEndEvent(stage="captions", report=report.to_dict()))
        return report

    def prune(self) -> None:
        """Captions off this run: still drop caption rows of removed or changed images."""
        if not self.captions.open_existing():
            return
        rows = {r["id"]: r for r in self.images.iter_rows(["sha256"])}
        have = reconcile_captions(self.captions, rows)
        changed = [cid for cid, (sha, _) in have.items() if rows[cid]["sha256"] != sha]
        for batch in chunks(changed, 1000):
            self.captions.delete(batch)

    # -- search --------------------------------------------------------------------------

    def search_embed_model(self) -> BaseEmbedding | None:
        """The embedder for the caption-vector branch, or None when that branch cannot
        run: no caption collection, captions stored without vectors (no warning: there is
        nothing to compare), or vectors of another model than this pack's choice (one
        warning naming both)."""
        if not self.captions.open_existing():
            return None
        recorded = self.captions.model
        if recorded == NO_CAPTION_VECTORS:
            return None
        choice = self.embed_choice
        if choice is None:
            return None
        mine = choice_identity(choice)
        if recorded and recorded != mine:
            if self._mismatch_warned:
                return None
            self._mismatch_warned = True  # once per pack: every auto search asks
            logger.warning(
                "Caption vectors were made by %s but the caption embedder is %s: the "
                "caption-vector branch is skipped (pass caption_embed=... to match).",
                recorded,
                mine,
            )
            return None
        return self.embed_model

    def close(self) -> None:
        """Close what the stage opened (the caption cache)."""
        if isinstance(self._transform, VLMCaptionTransform):
            self._transform.close()

    def caption_of(self, data: bytes) -> str | None:
        """A caption of these image bytes: stored with an indexed copy, else cached."""
        if not data:
            return None
        digest = hashlib.sha256(data).hexdigest()
        text = self.captions.text_for_sha256(digest)
        if text is None:
            transform = self.transform
            if transform is not None:
                cached = transform.cache.get_many([digest], transform.captioner.cache_key)
                text = cached[digest].text if digest in cached else None
        return text


def _on_a_terminal() -> bool:
    import sys

    return sys.stderr.isatty()


def _embed_choice_for(recorded: str | None) -> str | None:
    """The ``caption_embed`` choice that reproduces a recorded caption model, if usable."""
    if recorded == OPENAI_CAPTION_EMBED_MODEL and os.environ.get("OPENAI_API_KEY"):
        return "openai"
    if recorded == LOCAL_CAPTION_EMBED_MODEL and local_embedding_available():
        return "local"
    return None
