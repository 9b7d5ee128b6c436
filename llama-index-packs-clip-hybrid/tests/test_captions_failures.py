"""Caption and caption-vector APIs failing: 429 storms, resets and errors are retried."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from llama_index.packs.clip_hybrid import ClipHybridPack, DatabaseBusyError
from llama_index.packs.clip_hybrid.hybrid.bm25 import CaptionBM25Index, CaptionText
from llama_index.packs.clip_hybrid.testing.bad_images import make_odd_images
from PIL import Image


def _caption_transform(stub, tmp_path: Path, **kwargs):  # type: ignore[no-untyped-def]
    from llama_index.packs.clip_hybrid import LLMCaptioner, VLMCaptionTransform

    captioner = LLMCaptioner.openai(api_key="sk-test", api_base=stub.openai_base_url)
    kwargs.setdefault("cache_path", str(tmp_path / "captions.sqlite"))
    return VLMCaptionTransform(captioner, backoff_base=0.01, backoff_max=0.05, **kwargs)


def _images(n: int) -> list:
    import io

    from llama_index.packs.clip_hybrid.captions.base import CaptionImage

    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (i * 9 % 256, i * 5 % 256, 40)).save(buf, format="PNG")
        out.append(CaptionImage.from_bytes(f"img{i}", buf.getvalue()))
    return out


def test_a_429_storm_without_retry_after_backs_off_and_captions_everything(tmp_path) -> None:
    from llama_index.packs.clip_hybrid.testing import ApiStub

    with ApiStub() as stub:
        stub.fail_next(20, status=429, path_prefix="/v1/chat")  # no Retry-After header
        # max_retries covers the worst case (one image drawing all 20 faults, which a
        # loaded machine's scheduling can make happen): every image must end captioned
        outcomes, report = _caption_transform(
            stub, tmp_path, concurrency=4, max_retries=20
        ).caption_images(_images(20))
    assert all(o.caption for o in outcomes) and report.failed == []
    assert report.usage.retries == 20 and report.usage.failed_calls == 20
    assert report.usage.calls == 40


def test_connection_resets_are_retried(tmp_path) -> None:
    from llama_index.packs.clip_hybrid.testing import ApiStub

    with ApiStub() as stub:
        stub.fail_next(6, reset=True, path_prefix="/v1/chat")
        outcomes, report = _caption_transform(stub, tmp_path, concurrency=3).caption_images(
            _images(8)
        )
    assert all(o.caption for o in outcomes) and report.failed == []
    assert report.usage.retries == 6


def test_the_embedding_api_failing_is_retried_and_the_vectors_arrive(
    milvus_uri, fast_clip, image_dir, monkeypatch
) -> None:
    from llama_index.packs.clip_hybrid.testing import ApiStub

    with ApiStub() as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.openai_base_url)
        stub.fail_next(1, status=429, retry_after=0.2, path_prefix="/v1/embeddings")
        stub.fail_next(1, status=500, path_prefix="/v1/embeddings")
        stub.fail_next(1, reset=True, path_prefix="/v1/embeddings")
        stub.fail_next(1, malformed=True, path_prefix="/v1/embeddings")  # a 200 of bad JSON
        pack = ClipHybridPack(
            uri=milvus_uri,
            embed_model=fast_clip,
            captioner="openai",
            caption_embed="openai",
            show_progress=False,
        )
        report = pack.ingest(image_dir)
        calls = [r for r in stub.requests if r.path.startswith("/v1/embeddings")]
    n = len(list(image_dir.rglob("*.png")))
    assert report.captions is not None and report.captions.failed == []
    assert pack.caption_store.count() == n and pack.caption_store.dim == 1536
    assert len(calls) >= 5  # four failures, then answers
    pack.store.close()


def test_a_dead_caption_embedding_api_fails_its_branch_after_a_few_calls(
    milvus_uri, fast_clip, image_dir, monkeypatch
) -> None:
    """At search time the query embedding is one call that LlamaIndex and the OpenAI
    client both retry. With their defaults (10 and 2 more) a dead endpoint held a hybrid
    search for the whole minute LlamaIndex allows; now a handful of calls, then the
    branch is reported failed and the other branches answer."""
    from llama_index.packs.clip_hybrid.testing import ApiStub

    with ApiStub() as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.openai_base_url)
        with ClipHybridPack(
            uri=milvus_uri,
            embed_model=fast_clip,
            captioner="openai",
            caption_embed="openai",
            show_progress=False,
        ) as pack:
            pack.ingest(image_dir)
            stub.reset()
            stub.set_failure_rate(1.0, status=503)
            result = pack.search("a chart", mode="hybrid")
        calls = [r for r in stub.requests if r.path.startswith("/v1/embeddings")]
    assert result.hits and list(result.failed_branches) == ["caption_vector"]
    assert 1 < len(calls) <= 9, len(calls)
