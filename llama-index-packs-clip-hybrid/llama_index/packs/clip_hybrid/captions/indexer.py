"""CaptionIndexer: keeps the caption collection in step with the image collection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding

from .._util import chunks, unit_vector
from ..events import Progress
from ..milvus.captions import CaptionStore, fit_caption
from ..milvus.collection import PLACEHOLDER
from ..milvus.images import ImageStore
from ..redaction import package_logger, redact
from ..words import split_glued
from .base import CaptionError, CaptionImage
from .embedding import (
    NO_CAPTION_VECTORS,
    EmbedChoice,
    build_caption_embedding,
    choice_identity,
)
from .errors import classify_error
from .report import CaptionFailure, CaptionOutcome, CaptionReport
from .retry import RetryPolicy
from .transform import VLMCaptionTransform

logger = package_logger(__name__)


def reconcile_captions(
    captions: CaptionStore, images: dict[str, dict[str, Any]]
) -> dict[str, tuple[str, str]]:
    """Delete caption rows whose image left the image collection; the others by image
    id: (sha256 the caption was made from, captioner cache key)."""
    have: dict[str, tuple[str, str]] = {}
    for row in captions.iter_rows(["sha256", "cache_key"]):
        have[row["id"]] = (row["sha256"], row["cache_key"])
    gone = [cid for cid in have if cid not in images]
    for batch in chunks(gone, 1000):
        captions.delete(batch)
    return {cid: v for cid, v in have.items() if cid in images}


class CaptionIndexer:
    """Caption every indexed image once, embed the captions, and store them.

    An image needs a caption when it has no caption row, or its row was made from other
    bytes (sha256) or by another captioner setting (model, prompt, language). Captions come
    through :class:`VLMCaptionTransform` (so its cache makes repeats free), are embedded in
    batches and upserted; rows of images that left the image collection are deleted.

    Without an embedder (``embed=None``) the rows get a 2-dim placeholder vector and the
    model ``none``: the text is there for BM25, the caption-vector branch is off; when an
    embedder appears later the collection is rebuilt from the cache (no VLM calls).

    ``embed`` is a resolved choice (:func:`.embedding.choose_caption_embedding`): the
    embedder is built only when there are captions to embed, so a run with nothing new
    loads no model.
    """

    def __init__(
        self,
        *,
        images: ImageStore,
        captions: CaptionStore,
        transform: VLMCaptionTransform,
        embed: EmbedChoice,
        embed_batch_size: int = 100,
        show_progress: bool = False,
    ) -> None:
        self.images = images
        self.captions = captions
        self.transform = transform
        self.embed = embed
        self.embed_batch_size = embed_batch_size
        self._model: BaseEmbedding | None = None
        self.show_progress = show_progress

    def update(self) -> CaptionReport:
        key = self.transform.captioner.cache_key
        rows = {r["id"]: r for r in self.images.iter_rows(["path", "sha256"])}
        have = self._existing(rows)
        todo = [
            CaptionImage(key=image_id, data=b"", sha256=row["sha256"], path=row["path"])
            for image_id, row in rows.items()
            if row["path"] and have.get(image_id) != (row["sha256"], key)
        ]
        bar = None
        if self.show_progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(desc="captions", unit="img")
        progress = Progress("captions", total=len(todo), bar=bar)
        try:  # no call at all when todo is empty
            outcomes, report = self.transform.caption_images(todo, progress=progress.update)
        finally:
            if bar is not None:
                bar.close()
        self._store([o for o in outcomes if o.caption is not None and o.caption.text], report)
        # A changed image whose new caption is empty or failed must not keep describing
        # its old pixels; a caption of the same pixels (only the prompt changed) stays.
        outdated = [
            o.image.key
            for o in outcomes
            if not (o.caption is not None and o.caption.text)
            and o.image.key in have
            and have[o.image.key][0] != o.image.sha256
        ]
        for batch in chunks(outdated, 1000):
            self.captions.delete(batch)
        return report

    def _existing(self, rows: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str]]:
        """Caption rows by image id, after dropping those of images that left the image
        collection; a collection of placeholder vectors (made without an embedder) is
        rebuilt when an embedder is there now (its captions come back from the cache)."""
        if not self.captions.open_existing():
            return {}
        name = self._model_name()
        if self.captions.model == NO_CAPTION_VECTORS and name != NO_CAPTION_VECTORS:
            logger.info("Caption vectors: embedding the cached captions with %s.", name)
            self.captions.drop()
            return {}
        self.captions.check_model(name)
        return reconcile_captions(self.captions, rows)

    def _model_name(self) -> str:
        return choice_identity(self.embed)

    def _embedder(self) -> BaseEmbedding | None:
        if self._model is None and self.embed is not None:
            self._model = build_caption_embedding(self.embed)
        return self._model

    def _store(self, outcomes: Sequence[CaptionOutcome], report: CaptionReport) -> None:
        if not outcomes:
            return
        model = self._embedder()
        name = self._model_name()
        captioner = self.transform.captioner
        written = 0
        for batch in chunks(outcomes, self.embed_batch_size):
            texts = [fit_caption(o.caption.text) for o in batch if o.caption is not None]
            if report.stopped:  # a bad key for the embedder: no other batch can pass
                for outcome in batch:
                    reason = f"not attempted: {report.stopped}"
                    report.failed.append(
                        CaptionFailure(outcome.image.key, outcome.image.path, reason)
                    )
                continue
            try:
                if model is None:  # no embedder: rows for BM25, placeholder vectors
                    vectors = [list(PLACEHOLDER) for _ in texts]
                else:
                    # glued OCR words split for the embedder too (the caption stays as read)
                    split = [split_glued(text) for text in texts]
                    vectors = [unit_vector(v) for v in _embed(model, split)]
            except Exception as exc:  # the captions stay cached: only embedding is retried
                detail = (
                    exc.reason if isinstance(exc, CaptionError) else f"{type(exc).__name__}: {exc}"
                )
                reason = redact(f"caption embedding failed ({detail})")[:300]
                if isinstance(exc, CaptionError) and exc.fatal:
                    report.stopped = reason
                for outcome in batch:
                    image = outcome.image
                    report.failed.append(CaptionFailure(image.key, image.path, reason))
                continue
            self.captions.ensure(dim=len(vectors[0]), model=name)
            self.captions.upsert(
                [
                    {
                        "id": o.image.key,
                        "vector": vector,
                        "text": text,
                        "sha256": o.image.sha256,
                        "cache_key": captioner.cache_key,
                        "captioner": captioner.name,
                        "path": o.image.path,
                    }
                    for o, text, vector in zip(batch, texts, vectors, strict=True)
                ]
            )
            written += len(batch)
        if written:
            self.captions.flush()
        logger.info("Caption vectors: %d written to %r.", written, self.captions.collection_name)


#: Retries per caption-embedding batch. The OpenAI client already retries 429/5xx/resets
#: itself (max_retries); this also covers what it does not: a malformed 200 body.
EMBED_RETRIES = 2


def _embed(model: BaseEmbedding, texts: list[str]) -> list[list[float]]:
    def attempt() -> list[list[float]]:
        try:
            return model.get_text_embedding_batch(texts)
        except Exception as exc:
            error = classify_error(exc, 0)
            logger.info("Caption embedding failed (%s).", type(exc).__name__)
            raise error from exc

    policy = RetryPolicy(max_retries=EMBED_RETRIES, backoff_base=0.5, backoff_max=2.0)
    return policy.call(attempt)
