"""Cross-modal retrieval for LlamaIndex: CLIP in Milvus, by text or by image."""

from .captions.cache import CaptionCache
from .captions.captioners import (
    DEFAULT_CAPTION_PROMPT,
    Caption,
    Captioner,
    CaptionError,
    CaptionImage,
    LLMCaptioner,
    OCRCaptioner,
)
from .captions.transform import (
    CaptionFailure,
    CaptionOutcome,
    CaptionReport,
    CaptionUsage,
    VLMCaptionTransform,
    resolve_captioner,
)
from .clip.embedding import ClipWeightsUnavailableError, FastClipEmbedding
from .download import download_llama_pack
from .hybrid.clip_retrievers import ClipImageToImageRetriever, ClipTextToImageRetriever
from .images.decode import ImageLoadError, discover_images, open_image
from .ingest.ingestor import ImageIngestor, IngestFailure, IngestReport, image_node_id
from .milvus.collection import CollectionMismatchError
from .milvus.database import DatabaseBusyError
from .milvus.images import ImageStore
from .pack import ClipHybridPack

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
