"""Cross-modal retrieval for LlamaIndex: CLIP in Milvus, by text or by image."""

from .caption_cache import CaptionCache
from .caption_transform import (
    CaptionFailure,
    CaptionOutcome,
    CaptionReport,
    CaptionUsage,
    VLMCaptionTransform,
    resolve_captioner,
)
from .captioners import (
    DEFAULT_CAPTION_PROMPT,
    Caption,
    Captioner,
    CaptionError,
    CaptionImage,
    LLMCaptioner,
    OCRCaptioner,
)
from .download import download_llama_pack
from .embedding import ClipWeightsUnavailableError, FastClipEmbedding
from .images import ImageLoadError, discover_images, open_image
from .ingest import ImageIngestor, IngestFailure, IngestReport, image_node_id
from .pack import ClipHybridPack
from .retrievers import ClipImageToImageRetriever, ClipTextToImageRetriever
from .store import CollectionMismatchError, DatabaseBusyError, ImageStore

__all__ = [
    "DEFAULT_CAPTION_PROMPT",
    "Caption",
    "CaptionCache",
    "CaptionError",
    "CaptionFailure",
    "CaptionImage",
    "CaptionOutcome",
    "CaptionReport",
    "CaptionUsage",
    "Captioner",
    "ClipHybridPack",
    "ClipImageToImageRetriever",
    "ClipTextToImageRetriever",
    "ClipWeightsUnavailableError",
    "CollectionMismatchError",
    "DatabaseBusyError",
    "FastClipEmbedding",
    "ImageIngestor",
    "ImageLoadError",
    "ImageStore",
    "IngestFailure",
    "IngestReport",
    "LLMCaptioner",
    "OCRCaptioner",
    "VLMCaptionTransform",
    "discover_images",
    "download_llama_pack",
    "image_node_id",
    "open_image",
    "resolve_captioner",
]
