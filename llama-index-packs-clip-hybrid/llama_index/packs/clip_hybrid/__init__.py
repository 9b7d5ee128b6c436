"""Cross-modal retrieval for LlamaIndex: CLIP in Milvus, by text or by image.

Names are imported on first use (``import llama_index.packs.clip_hybrid`` loads neither
torch nor LlamaIndex): the ``clip-hybrid`` command starts fast, and a program pays only
for what it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it.
_EXPORTS = {
    "ClipHybridPack": ".pack",
    "SearchResult": ".results",
    "download_llama_pack": ".download",
    "OptionError": ".options",
    # CLIP
    "FastClipEmbedding": ".clip.embedding",
    "ClipWeightsUnavailableError": ".clip.embedding",
    # images
    "ImageLoadError": ".images.decode",
    "open_image": ".images.decode",
    "discover_images": ".images.discovery",
    "image_node_id": ".images.discovery",
    # storage
    "ImageStore": ".milvus.images",
    "CollectionMismatchError": ".milvus.collection",
    "DatabaseBusyError": ".milvus.database",
    # ingestion
    "ImageIngestor": ".ingest.ingestor",
    "IngestFailure": ".ingest.report",
    "IngestReport": ".ingest.report",
    # captions
    "DEFAULT_CAPTION_PROMPT": ".captions.base",
    "Caption": ".captions.base",
    "Captioner": ".captions.base",
    "CaptionError": ".captions.base",
    "CaptionImage": ".captions.base",
    "LLMCaptioner": ".captions.llm",
    "OCRCaptioner": ".captions.ocr",
    "CaptionCache": ".captions.cache",
    "CaptionFailure": ".captions.report",
    "CaptionOutcome": ".captions.report",
    "CaptionReport": ".captions.report",
    "CaptionUsage": ".captions.report",
    "VLMCaptionTransform": ".captions.transform",
    "resolve_captioner": ".captions.choice",
    # retrieval
    "ClipImageToImageRetriever": ".hybrid.clip_retrievers",
    "ClipTextToImageRetriever": ".hybrid.clip_retrievers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .captions.base import (
        DEFAULT_CAPTION_PROMPT,
        Caption,
        Captioner,
        CaptionError,
        CaptionImage,
    )
    from .captions.cache import CaptionCache
    from .captions.choice import resolve_captioner
    from .captions.llm import LLMCaptioner
    from .captions.ocr import OCRCaptioner
    from .captions.report import CaptionFailure, CaptionOutcome, CaptionReport, CaptionUsage
    from .captions.transform import VLMCaptionTransform
    from .clip.embedding import ClipWeightsUnavailableError, FastClipEmbedding
    from .download import download_llama_pack
    from .hybrid.clip_retrievers import ClipImageToImageRetriever, ClipTextToImageRetriever
    from .images.decode import ImageLoadError, open_image
    from .images.discovery import discover_images, image_node_id
    from .ingest.ingestor import ImageIngestor
    from .ingest.report import IngestFailure, IngestReport
    from .milvus.collection import CollectionMismatchError
    from .milvus.database import DatabaseBusyError
    from .milvus.images import ImageStore
    from .options import OptionError
    from .pack import ClipHybridPack
    from .results import SearchResult
