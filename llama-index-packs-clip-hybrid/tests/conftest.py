from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.embeddings import MockEmbedding
from llama_index.packs.clip_hybrid import ClipHybridPack, FastClipEmbedding, LLMCaptioner
from llama_index.packs.clip_hybrid.testing import ApiStub, caption_table
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


@pytest.fixture
def caption_texts(image_dir: Path) -> dict[str, str]:
    """What the stub VLM 'sees' in each sample image, keyed by the sha256 of its bytes."""
    texts = {
        "architecture": "An architecture diagram with an API gateway. Text: 系统架构图",
        "text_zh": "A sign with Chinese text. Text: 用户登录流程",
        "bar_chart": "A bar chart of monthly sales. Text: Sales by month",
    }
    out = {}
    for path in image_dir.rglob("*.png"):
        kind = path.parent.name
        out[hashlib.sha256(path.read_bytes()).hexdigest()] = texts.get(kind, f"A {kind} image.")
    return out


@pytest.fixture
def stub(caption_texts):  # type: ignore[no-untyped-def]
    """The loopback API stub captioning the sample images as :func:`caption_texts` says."""
    with ApiStub(caption=caption_table(caption_texts)) as server:
        yield server


@pytest.fixture
def new_hybrid_pack(milvus_uri, fast_clip, stub):  # type: ignore[no-untyped-def]
    """A pack with stub GPT-4o captions and mock caption vectors, nothing ingested yet."""
    captioner = LLMCaptioner.openai(api_key="sk-test", api_base=stub.openai_base_url)
    pack = ClipHybridPack(
        uri=milvus_uri,
        embed_model=fast_clip,
        captioner=captioner,
        caption_embed=MockEmbedding(embed_dim=16),
        show_progress=False,
    )
    yield pack
    pack.store.close()


@pytest.fixture
def hybrid_pack(new_hybrid_pack, image_dir):  # type: ignore[no-untyped-def]
    """:func:`new_hybrid_pack` over the sample images."""
    new_hybrid_pack.ingest(image_dir)
    return new_hybrid_pack
