"""Pytest fixtures shared by this repository's test suites (and usable by yours).

Import them into a ``conftest.py``::

    from llama_index.packs.clip_hybrid.testing.fixtures import *  # noqa: F403
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.packs.clip_hybrid.testing.api_stub import ApiStub
from llama_index.packs.clip_hybrid.testing.sample_images import SampleImage, make_sample_images
from llama_index.packs.clip_hybrid.testing.tiny_clip import make_tiny_clip_checkpoint

__all__ = [
    "api_stub",
    "milvus_uri",
    "sample_images",
    "tiny_clip_checkpoint",
]


def shared_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every worker of this test run: the run's base temp folder, or,
    under pytest-xdist, the folder that holds each worker's own (``pytest-N/``)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (POSIX ``flock``; no lock elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: files are still written atomically
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded tiny CLIP TorchScript checkpoint, built once per test run (shared by all
    pytest-xdist workers: the first builds it, the others wait for it)."""
    path = shared_temp_dir(tmp_path_factory) / "tiny-clip" / "seed0.pt"
    with _exclusive(path.with_suffix(".lock")):
        if not path.exists():
            make_tiny_clip_checkpoint(path, seed=0)
    return path


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
