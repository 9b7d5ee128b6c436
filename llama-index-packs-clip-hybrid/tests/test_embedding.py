"""FastClipEmbedding against the upstream per-item ClipEmbedding path."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request

import numpy as np
import pytest
from llama_index.embeddings.clip import ClipEmbedding
from llama_index.packs.clip_hybrid import ClipWeightsUnavailableError, FastClipEmbedding

TEXTS = [
    "a",
    "system architecture diagram",
    "a bar chart of quarterly revenue with seven bars and a title",
    "mountains at sunset",
]


def _unit(rows) -> np.ndarray:  # type: ignore[no-untyped-def]
    arr = np.asarray(rows, dtype=np.float64)
    return arr / np.linalg.norm(arr, axis=1, keepdims=True)


def test_is_a_clip_embedding_and_loads_lazily(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "not-there.pt"
    embed = FastClipEmbedding(model_name=str(missing))  # no I/O, no error yet
    assert isinstance(embed, ClipEmbedding)
    assert not embed.is_loaded
    with pytest.raises(ValueError, match=r"neither a known name .* nor an existing checkpoint"):
        embed.get_text_embedding("x")


def test_images_match_upstream_per_item_path(fast_clip, tiny_clip_embedding, sample_images) -> None:  # type: ignore[no-untyped-def]
    paths = [str(s.path) for s in sample_images]
    upstream = _unit([tiny_clip_embedding.get_image_embedding(p) for p in paths])
    ours = np.asarray(fast_clip.get_image_embedding_batch(paths))
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (upstream * ours).sum(axis=1).min() >= 0.999


def test_texts_padded_to_their_batch_match_upstream(fast_clip, tiny_clip_embedding) -> None:  # type: ignore[no-untyped-def]
    upstream = _unit([tiny_clip_embedding.get_text_embedding(t) for t in TEXTS])
    ours = np.asarray(fast_clip.get_text_embedding_batch(TEXTS))
    assert (upstream * ours).sum(axis=1).min() >= 0.999
    # Order is preserved although batches are sorted by length internally.
    alone = np.asarray([fast_clip.get_query_embedding(t) for t in TEXTS])
    assert np.allclose(alone, ours, atol=1e-5)


def test_bf16_agrees_with_fp32(tiny_clip_checkpoint, fast_clip, sample_images) -> None:  # type: ignore[no-untyped-def]
    bf16 = FastClipEmbedding(model_name=str(tiny_clip_checkpoint), precision="bf16")
    paths = [str(s.path) for s in sample_images[:6]]
    a = np.asarray(bf16.get_image_embedding_batch(paths))
    b = np.asarray(fast_clip.get_image_embedding_batch(paths))
    assert bf16.resolved_precision == "bf16"
    assert (a * b).sum(axis=1).min() >= 0.99
    t = np.asarray(bf16.get_text_embedding_batch(TEXTS))
    u = np.asarray(fast_clip.get_text_embedding_batch(TEXTS))
    assert (t * u).sum(axis=1).min() >= 0.99


def test_long_text_truncates_with_a_warning_where_upstream_raises(
    fast_clip, tiny_clip_embedding, caplog
) -> None:  # type: ignore[no-untyped-def]
    long_text = "word " * 200
    with pytest.raises(RuntimeError, match="too long for context length 77"):
        tiny_clip_embedding.get_text_embedding(long_text)  # upstream #16937
    with caplog.at_level(logging.WARNING):
        vector = fast_clip.get_text_embedding(long_text)
    assert len(vector) == 32
    assert "Truncated 1 of 1 texts" in caplog.text
    # Truncation keeps the first 75 tokens: any longer tail gives the same vector.
    assert np.allclose(vector, fast_clip.get_text_embedding("word " * 300), atol=1e-5)
    chinese = "系统架构图显示了用户登录流程以及数据库缓存队列和网关之间的关系" * 2
    assert len(fast_clip.get_text_embedding(chinese)) == 32


async def test_async_does_not_block_the_event_loop(fast_clip, sample_images) -> None:  # type: ignore[no-untyped-def]
    paths = [str(s.path) for s in sample_images] * 4
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    vectors = await fast_clip.aget_image_embedding_batch(paths)
    elapsed = time.perf_counter() - start
    done.set()
    await task
    assert len(vectors) == len(paths)
    assert ticks >= max(2, int(elapsed / 0.005) // 4)  # the loop kept running


def test_download_failure_says_so_and_names_the_option(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A dead proxy on loopback makes the download fail fast and offline, everywhere.
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    # urlopen builds its global opener (and reads the proxy variables) once, on first use:
    # start from none and put back what was there, or every later urlopen in this process
    # would go through the dead proxy.
    monkeypatch.setattr(urllib.request, "_opener", None)
    embed = FastClipEmbedding(model_name="ViT-B/32", download_root=str(tmp_path))
    with pytest.raises(ClipWeightsUnavailableError) as info:
        embed.get_text_embedding("x")
    message = str(info.value)
    assert message.startswith("Could not download the CLIP weights for 'ViT-B/32'")
    assert "--clip-model PATH" in message and "model_name=" in message


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="device='tpu'"):
        FastClipEmbedding(device="tpu")
    with pytest.raises(ValueError, match=r"fp16.*needs a GPU"):
        FastClipEmbedding(device="cpu", precision="fp16")
    with pytest.raises(ValueError):
        FastClipEmbedding(embed_batch_size=0)
