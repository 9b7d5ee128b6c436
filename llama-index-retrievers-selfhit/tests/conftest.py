from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from llama_index.core import StorageContext
from llama_index.core.indices import MultiModalVectorStoreIndex
from llama_index.core.schema import ImageNode
from llama_index.packs.clip_hybrid.testing.fixtures import (
    milvus_uri,
    sample_images,
    tiny_clip_checkpoint,
)
from llama_index.vector_stores.milvus import MilvusVectorStore


@pytest.fixture(scope="session")
def tiny_clip_embedding(tiny_clip_checkpoint: Path):  # type: ignore[no-untyped-def]
    """LlamaIndex's own ClipEmbedding over the tiny checkpoint: the retriever is shown
    wrapping the plain upstream stack."""
    from llama_index.embeddings.clip import ClipEmbedding

    return ClipEmbedding(model_name=str(tiny_clip_checkpoint))


class ImageCorpus:
    """A real Milvus Lite multimodal index over image files embedded by the tiny CLIP."""

    def __init__(self, root: Path, uri: str, embed_model) -> None:  # type: ignore[no-untyped-def]
        self.root = root
        self.uri = uri
        self.embed_model = embed_model

    def build(
        self, paths: list[Path], *, use_async_client: bool = False
    ) -> MultiModalVectorStoreIndex:
        # The async client can only be made inside a running loop (upstream #20313).
        dim = len(self.embed_model.get_text_embedding("probe"))
        text_store = MilvusVectorStore(
            uri=self.uri,
            collection_name="texts",
            dim=dim,
            similarity_metric="COSINE",
            use_async_client=use_async_client,
        )
        image_store = MilvusVectorStore(
            uri=self.uri,
            collection_name="images",
            dim=dim,
            similarity_metric="COSINE",
            use_async_client=use_async_client,
        )
        storage = StorageContext.from_defaults(vector_store=text_store, image_store=image_store)
        nodes = [ImageNode(image_path=str(p), metadata={"file_path": str(p)}) for p in paths]
        return MultiModalVectorStoreIndex(
            nodes,
            storage_context=storage,
            embed_model=self.embed_model,
            image_embed_model=self.embed_model,
        )


@pytest.fixture
def image_files(tmp_path: Path, sample_images) -> list[Path]:  # type: ignore[no-untyped-def]
    """Private copies of the sample images (tests may add, copy or break files)."""
    out = []
    for sample in sample_images[:10]:
        target = tmp_path / "images" / sample.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample.path, target)
        out.append(target)
    return out


@pytest.fixture
def corpus(tmp_path: Path, milvus_uri: str, tiny_clip_embedding) -> ImageCorpus:  # type: ignore[no-untyped-def]
    return ImageCorpus(tmp_path, milvus_uri, tiny_clip_embedding)
