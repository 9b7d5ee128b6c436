from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from llama_index.packs.clip_hybrid import ClipHybridPack, FastClipEmbedding
from llama_index.packs.clip_hybrid.testing.fixtures import (
    api_stub,
    milvus_uri,
    sample_images,
    tiny_clip_checkpoint,
    tiny_clip_embedding,
)


@pytest.fixture(scope="session")
def fast_clip(tiny_clip_checkpoint: Path) -> FastClipEmbedding:
    """One loaded FastClipEmbedding over the tiny checkpoint, shared by the session."""
    return FastClipEmbedding(model_name=str(tiny_clip_checkpoint), precision="fp32")


@pytest.fixture
def image_dir(tmp_path: Path, sample_images) -> Path:  # type: ignore[no-untyped-def]
    """A private copy of the sample images, in their kind folders."""
    root = tmp_path / "images"
    for sample in sample_images:
        target = root / sample.kind / sample.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample.path, target)
    return root


@pytest.fixture
def pack(milvus_uri: str, fast_clip: FastClipEmbedding) -> ClipHybridPack:
    return ClipHybridPack(uri=milvus_uri, embed_model=fast_clip, similarity_top_k=3)
