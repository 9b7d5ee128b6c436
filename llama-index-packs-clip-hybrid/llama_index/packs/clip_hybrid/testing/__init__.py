"""Deterministic test helpers: a tiny real CLIP checkpoint, sample images, API stubs."""

from llama_index.packs.clip_hybrid.testing.api_stub import (
    ApiStub,
    Fault,
    RecordedRequest,
    caption_table,
)
from llama_index.packs.clip_hybrid.testing.hard_text import (
    HardTextImage,
    draw_hard_text,
    make_hard_text_images,
)
from llama_index.packs.clip_hybrid.testing.requirements import require
from llama_index.packs.clip_hybrid.testing.sample_images import (
    KINDS,
    SampleImage,
    find_cjk_font,
    make_sample_images,
)
from llama_index.packs.clip_hybrid.testing.tiny_clip import (
    TinyClipConfig,
    make_tiny_clip_checkpoint,
)

__all__ = [
    "KINDS",
    "ApiStub",
    "Fault",
    "HardTextImage",
    "RecordedRequest",
    "SampleImage",
    "TinyClipConfig",
    "caption_table",
    "draw_hard_text",
    "find_cjk_font",
    "make_hard_text_images",
    "make_sample_images",
    "make_tiny_clip_checkpoint",
    "require",
]
