"""Synthetic captioned image rows for the scale benchmarks (bench_hybrid, bench_scale).

Seeded random L2-normalised 512-d "CLIP" vectors and 384-d caption vectors, and 12-word
English + Chinese captions, written through the pack's own stores into Milvus Lite.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

WORDS_EN = [
    "diagram",
    "chart",
    "sales",
    "revenue",
    "login",
    "flow",
    "gateway",
    "service",
    "database",
    "cache",
    "queue",
    "photo",
    "mountain",
    "lake",
    "sunset",
    "invoice",
    "total",
    "report",
    "quarterly",
    "button",
    "menu",
    "search",
    "user",
    "screen",
    "arrow",
    "step",
    "decision",
    "bar",
    "month",
    "year",
    "team",
    "office",
    "street",
    "sign",
    "parking",
    "exit",
]
WORDS_ZH = [
    "系统",
    "架构",
    "销售",
    "报告",
    "用户",
    "登录",
    "流程",
    "年度",
    "数据库",
    "服务",
    "网关",
    "缓存",
    "图表",
    "月份",
]


def synthetic_pack(
    uri: str, *, prefix: str = "", clip: Any = None, caption_embed: Any = None
) -> tuple[Any, Any]:
    """A pack over ``uri`` and its caption store.

    ``prefix``: put before the collection names (a benchmark's own names on a server).
    ``clip``: the CLIP model (default: ViT-B/32, never loaded: queries carry vectors).
    ``caption_embed``: a 384-dim caption embedder (default: a constant MockEmbedding)."""
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.packs.clip_hybrid import ClipHybridPack, FastClipEmbedding
    from llama_index.packs.clip_hybrid.captions.embedding import embedding_identity
    from llama_index.packs.clip_hybrid.milvus.captions import CaptionStore

    pack = ClipHybridPack(
        uri=uri,
        embed_model=clip or FastClipEmbedding(model_name="ViT-B/32"),
        captioner="none",
        caption_embed=caption_embed or MockEmbedding(embed_dim=384),
        similarity_top_k=10,
        collection_name=f"{prefix}images",
        caption_collection=f"{prefix}captions",
    )
    pack.store.ensure(dim=512, model="ViT-B/32")
    captions = CaptionStore(pack.store, collection_name=f"{prefix}captions")
    caption_model = pack.caption_embed_model
    assert caption_model is not None  # a caption embedder was given above
    captions.ensure(dim=384, model=embedding_identity(caption_model))
    return pack, captions


def image_row(
    i: int, vector: np.ndarray, *, path: str, folder: str, size: tuple[int, int] = (1, 1)
) -> dict[str, Any]:
    """Image ``i``'s row in the image collection (id ``img-0000042``, a fake sha256)."""
    return {
        "id": f"img-{i:07d}",
        "vector": vector.tolist(),
        "path": path,
        "sha256": f"{i:064x}",
        "folder": folder,
        "category": f"c{i % 6}",
        "width": size[0],
        "height": size[1],
        "size": 1,
        "mtime": 0.0,
    }


def synthetic_rows(
    start: int, count: int, rng: np.random.Generator, words: random.Random
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any], np.ndarray]:
    """Image rows, caption rows, BM25 caption texts and the image vectors of images
    ``start`` .. ``start + count - 1``."""
    from llama_index.packs.clip_hybrid.hybrid.bm25 import CaptionText

    img = rng.standard_normal((count, 512)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    cap = rng.standard_normal((count, 384)).astype(np.float32)
    cap /= np.linalg.norm(cap, axis=1, keepdims=True)
    rows, cap_rows, texts = [], [], []
    for j in range(count):
        image_id = f"img-{start + j:07d}"
        path = f"/bench/{image_id}.png"
        text = " ".join(words.choice(WORDS_EN + WORDS_ZH) for _ in range(12))
        texts.append(CaptionText(image_id, text, "s"))
        rows.append(image_row(start + j, img[j], path=path, folder="/bench"))
        cap_rows.append(
            {
                "id": image_id,
                "vector": cap[j].tolist(),
                "text": text,
                "sha256": f"{start + j:064x}",
                "cache_key": "k",
                "captioner": "bench",
                "path": path,
            }
        )
    return rows, cap_rows, texts, img
