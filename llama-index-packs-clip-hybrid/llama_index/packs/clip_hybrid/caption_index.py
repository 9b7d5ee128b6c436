"""CaptionIndexer: keeps the caption collection in step with the image collection."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from llama_index.core.base.embeddings.base import BaseEmbedding

from ._util import chunks, unit_vector
from .caption_embedding import embedding_identity
from .caption_store import CaptionStore, fit_caption
from .caption_transform import CaptionFailure, CaptionOutcome, CaptionReport, VLMCaptionTransform
from .captioners import CaptionImage, redact
from .store import ImageStore

logger = logging.getLogger(__name__)


class CaptionIndexer:
    """Caption every indexed image once, embed the captions, and store them.

    An image needs a caption when it has no caption row, or its row was made from other
    bytes (sha256) or by another captioner setting (model, prompt, language). Captions come
    through :class:`VLMCaptionTransform` (so its cache makes repeats free), are embedded in
    batches and upserted; rows of images that left the image collection are deleted.

    Without an embedder (``embed_model=None``) captions are made and cached (for BM25)
    but no caption vectors are stored.
    """

    def __init__(
        self,
        *,
        images: ImageStore,
        captions: CaptionStore,
        transform: VLMCaptionTransform,
        embed_model: BaseEmbedding | None,
        embed_batch_size: int = 100,
    ) -> None:
        self.images = images
        self.captions = captions
        self.transform = transform
        self.embed_model = embed_model
        self.embed_batch_size = embed_batch_size

    def update(self) -> CaptionReport:
        key = self.transform.captioner.cache_key
        rows = {r["id"]: r for r in self.images.iter_rows(["path", "sha256"])}
        have: dict[str, tuple[str, str]] = {}
        if self.embed_model is not None and self.captions.open_existing():
            self.captions.check_model(embedding_identity(self.embed_model))
            for row in self.captions.iter_rows(["sha256", "cache_key"]):
                have[row["id"]] = (row["sha256"], row["cache_key"])
            stale = [cid for cid in have if cid not in rows]
            for batch in chunks(stale, 1000):
                self.captions.delete(batch)
        todo = [
            CaptionImage(key=image_id, data=b"", sha256=row["sha256"], path=row["path"])
            for image_id, row in rows.items()
            if row["path"] and have.get(image_id) != (row["sha256"], key)
        ]
        outcomes, report = self.transform.caption_images(todo)
        if self.embed_model is not None:
            self._store([o for o in outcomes if o.caption is not None and o.caption.text], report)
        return report

    def _store(self, outcomes: Sequence[CaptionOutcome], report: CaptionReport) -> None:
        model = self.embed_model
        assert model is not None
        name = embedding_identity(model)
        captioner = self.transform.captioner
        written = 0
        for batch in chunks(outcomes, self.embed_batch_size):
            texts = [fit_caption(o.caption.text) for o in batch if o.caption is not None]
            try:
                vectors = [unit_vector(v) for v in model.get_text_embedding_batch(texts)]
            except Exception as exc:  # the captions stay cached: only embedding is retried
                reason = redact(f"caption embedding failed ({type(exc).__name__}: {exc})")[:300]
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
