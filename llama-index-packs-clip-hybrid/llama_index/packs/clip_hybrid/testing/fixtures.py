"""Pytest fixtures shared by this repository's test suites (and usable by yours).

Import them into a ``conftest.py``::

    from llama_index.packs.clip_hybrid.testing.fixtures import *  # noqa: F403
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.packs.clip_hybrid.testing.api_stub import ApiStub
from llama_index.packs.clip_hybrid.testing.sample_images import SampleImage, make_sample_images
from llama_index.packs.clip_hybrid.testing.tiny_clip import make_tiny_clip_checkpoint

__all__ = [
    "api_stub",
    "milvus_uri",
    "sample_images",
    "tiny_clip_checkpoint",
    "tiny_clip_embedding",
]


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded tiny CLIP TorchScript checkpoint, built once per session."""
    path = tmp_path_factory.getbasetemp() / "tiny-clip" / "seed0.pt"
    if not path.exists():
        make_tiny_clip_checkpoint(path, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_clip_embedding(tiny_clip_checkpoint: Path) -> Any:
    """Upstream ``ClipEmbedding`` loading the tiny checkpoint through ``clip.load``."""
    from llama_index.embeddings.clip import ClipEmbedding

    return ClipEmbedding(model_name=str(tiny_clip_checkpoint))


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory: pytest.TempPathFactory) -> list[SampleImage]:
    """Deterministic sample images (treat as read-only: they are shared by the session)."""
    return make_sample_images(tmp_path_factory.mktemp("sample-images"), seed=0)


@pytest.fixture
def milvus_uri(tmp_path: Path) -> str:
    """A fresh Milvus Lite database path under the test's tmp dir."""
    return str(tmp_path / "milvus.db")


@pytest.fixture
def api_stub() -> Iterator[ApiStub]:
    """An OpenAI/DashScope-compatible server on 127.0.0.1, recording requests."""
    with ApiStub() as stub:
        yield stub
