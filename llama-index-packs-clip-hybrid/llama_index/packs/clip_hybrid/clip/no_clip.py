"""Caption-only mode: an index without CLIP (``clip_model="none"``).

For users who cannot get CLIP weights (air-gapped, no model hub) but have captions (a VLM
key, or offline OCR): images are still discovered, hashed, checked and stored (ids, paths,
sizes, metadata), so caption hits map back to them; search runs on the caption branches
(caption vectors and BM25). The image collection holds a constant 2-dim placeholder vector
per image (Milvus needs a vector field) and records the model as ``none``, so a later
CLIP run refuses to mix in instead of searching placeholders.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding

from ..milvus.collection import PLACEHOLDER
from ..options import OptionError

NO_CLIP = "none"


class NoClipError(OptionError):
    """A CLIP search was asked of an index (or pack) without CLIP."""


_MESSAGE = (
    "This pack has no CLIP model ({clip_model=none}, the caption-only mode): search with "
    "{mode=hybrid} (caption vectors and BM25), or index with a CLIP model for "
    "text->image and image->image."
)


class NoClipEmbedding(MultiModalEmbedding):
    """The placeholder 'model' of caption-only mode; it never loads anything."""

    model_name: str = NO_CLIP
    embed_batch_size: int = 64

    @classmethod
    def class_name(cls) -> str:
        return "NoClipEmbedding"

    def _get_image_embedding(self, img_file_path: Any) -> list[float]:
        return list(PLACEHOLDER)

    async def _aget_image_embedding(self, img_file_path: Any) -> list[float]:
        return list(PLACEHOLDER)

    def _get_text_embedding(self, text: str) -> list[float]:
        raise NoClipError(_MESSAGE)

    def _get_query_embedding(self, query: str) -> list[float]:
        raise NoClipError(_MESSAGE)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        raise NoClipError(_MESSAGE)


def no_clip_error() -> NoClipError:
    return NoClipError(_MESSAGE)
