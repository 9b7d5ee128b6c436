from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from llama_index.packs.clip_hybrid import ClipHybridPack, FastClipEmbedding
from llama_index.packs.clip_hybrid.testing.fixtures import (
    api_stub,
    milvus_uri,
    sample_images,
    tiny_clip_checkpoint,
)


@pytest.fixture(autouse=True)
def _no_paid_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test talks to a paid API by accident, and the automatic captioner choice does not
    depend on the machine: captions are off unless a test turns them on."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "DASHSCOPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLIP_HYBRID_CAPTIONER", "none")


@pytest.fixture(scope="session")
def tiny_clip_embedding(tiny_clip_checkpoint: Path) -> Any:
    """Upstream ``ClipEmbedding`` loading the tiny checkpoint through ``clip.load``: the
    reference our CLIP is checked against (a dev dependency, not shipped)."""
    from llama_index.embeddings.clip import ClipEmbedding

    return ClipEmbedding(model_name=str(tiny_clip_checkpoint))


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
