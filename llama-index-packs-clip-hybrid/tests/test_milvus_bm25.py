"""Milvus' own BM25 on the caption collection, and server-side vs client-side RRF parity."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import QueryBundle
from llama_index.packs.clip_hybrid import ClipHybridPack, ImageStore, LLMCaptioner
from llama_index.packs.clip_hybrid.hybrid.caption_branches import (
    CaptionVectorRetriever,
    MilvusBM25Retriever,
)
from llama_index.packs.clip_hybrid.hybrid.fusion import RRFFusionRetriever
from llama_index.packs.clip_hybrid.milvus.captions import CaptionStore
from llama_index.packs.clip_hybrid.milvus.collection import CollectionMismatchError
from llama_index.packs.clip_hybrid.testing import ApiStub

WORDS = [
    *("diagram", "chart", "sales", "revenue", "login", "flow", "gateway"),
    *("service", "database", "photo", "mountain", "lake"),
]
WORDS += ["系统", "架构", "销售", "报告", "用户", "登录", "流程", "年度"]


class _Vectors(MockEmbedding):
    """Query vectors from a fixed table (the corpus' own vectors, perturbed)."""

    table: ClassVar[dict[str, list[float]]] = {}

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.table[query]


def _corpus(uri: str, n: int = 60, dim: int = 8):
    images = ImageStore(uri=uri)
    images.ensure(dim=4)
    captions = CaptionStore(images, bm25="milvus")
    captions.ensure(dim=dim, model="test")
    rng = np.random.default_rng(0)
    words = random.Random(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows, image_rows = [], []
    for i in range(n):
        text = " ".join(words.choice(WORDS) for _ in range(6))
        rows.append(
            {
                "id": f"i{i}",
                "vector": vectors[i].tolist(),
                "text": text,
                "sha256": f"s{i}",
                "cache_key": "k",
                "captioner": "t",
                "path": f"/x/i{i}.png",
            }
        )
        image_rows.append(
            {
                "id": f"i{i}",
                "vector": [1.0, 0, 0, 0],
                "path": f"/x/i{i}.png",
                "sha256": f"s{i}",
                "folder": "/x",
                "category": "x",
                "width": 1,
                "height": 1,
                "size": 1,
                "mtime": 0.0,
            }
        )
    captions.upsert(rows)
    images.upsert(image_rows)
    captions.flush()
    images.flush()
    return images, captions, vectors


def test_milvus_bm25_reads_chinese_and_scores_are_positive(milvus_uri) -> None:
    images, captions, _ = _corpus(milvus_uri)
    try:
        hits = captions.search_bm25("销售 报告", limit=10)
        assert hits and all(score > 0 for _, score in hits)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
        texts = {r["id"]: r["text"] for r in captions.iter_rows(["text"])}
        assert "销售" in texts[hits[0][0]] or "报告" in texts[hits[0][0]]
        retriever = MilvusBM25Retriever(captions=captions, images=images, similarity_top_k=5)
        nodes = retriever.retrieve("登录")
        assert nodes and all(n.node.metadata.get("file_path") is None for n in nodes)  # id-only
    finally:
        images.close()


def _group_by_score(pairs: list[tuple[str, float]]) -> list[set[str]]:
    groups: list[set[str]] = []
    last = None
    for node_id, score in pairs:
        if last is not None and abs(score - last) < 1e-9:
            groups[-1].add(node_id)
        else:
            groups.append({node_id})
        last = score
    return groups


def test_server_side_and_client_side_rrf_agree_up_to_ties(milvus_uri) -> None:
    images, captions, vectors = _corpus(milvus_uri)
    rng = np.random.default_rng(1)
    words = random.Random(1)
    try:
        for q in range(12):
            vector = vectors[q * 3] + 0.3 * rng.standard_normal(vectors.shape[1])
            vector = (vector / np.linalg.norm(vector)).tolist()
            text = f"{words.choice(WORDS)} {words.choice(WORDS)}"
            _Vectors.table[text] = vector
            server = captions.hybrid_search(vector, text, limit=10, candidates=50)
            client = RRFFusionRetriever(
                {
                    "caption_vector": CaptionVectorRetriever(
                        captions=captions,
                        images=images,
                        embed_model=_Vectors(embed_dim=8),
                        similarity_top_k=50,
                    ),
                    "bm25": MilvusBM25Retriever(
                        captions=captions, images=images, similarity_top_k=50
                    ),
                },
                similarity_top_k=10,
            ).retrieve(QueryBundle(query_str=text))
            ours = [(h.node.node_id, h.score or 0.0) for h in client]
            # Same images in the same order, up to ties; Milvus ranks from 1, LlamaIndex
            # from 0: the top hit of a branch adds 1/61 there and 1/60 here.
            assert _group_by_score(ours) == _group_by_score(server), text
            assert server[0][1] == pytest.approx(sum(1 / (61 + r - 1) for r in _ranks(client[0])))
    finally:
        images.close()


def _ranks(hit) -> list[int]:
    return [b["rank"] for b in hit.node.metadata["hybrid"]["branches"].values()]


def test_pack_with_milvus_bm25_end_to_end(milvus_uri, fast_clip, image_dir) -> None:
    def caption(request) -> str:
        digest = hashlib.sha256(request.image_urls[0].encode()).digest()
        return "Text: 系统架构图" if digest[0] % 2 else "A chart of 销售"

    with ApiStub(caption=caption) as stub:
        captioner = LLMCaptioner.openai(api_key="sk-test", api_base=stub.openai_base_url)
        pack = ClipHybridPack(
            uri=milvus_uri,
            embed_model=fast_clip,
            captioner=captioner,
            caption_embed=MockEmbedding(embed_dim=8),
            bm25="milvus",
            show_progress=False,
        )
        try:
            pack.ingest(image_dir)
            assert pack.caption_store.has_milvus_bm25()
            result = pack.search("架构", mode="hybrid", similarity_top_k=3)
            assert result.branches == ["clip", "caption_vector", "bm25"]
            bm25 = pack.hybrid_retriever(similarity_top_k=20, branches=("bm25",))
            hits = bm25.retrieve("架构")
            texts = {r["id"]: r["text"] for r in pack.caption_store.iter_rows(["text"])}
            assert hits and all("系统架构图" in texts[h.node.node_id] for h in hits)
            assert len(hits) == sum("系统架构图" in t for t in texts.values())
            assert all(h.node.metadata["file_path"] for h in hits)  # read back from images
        finally:
            pack.store.close()
        # A later pack with the default bm25="auto" finds Milvus BM25 on the collection.
        auto = ClipHybridPack(
            uri=milvus_uri, embed_model=fast_clip, caption_embed=MockEmbedding(embed_dim=8)
        )
        try:
            assert auto.search("架构", mode="hybrid").branches[-1] == "bm25"
            assert not Path(auto.bm25_path).exists()  # no in-process index was built
        finally:
            auto.store.close()


def test_milvus_bm25_on_a_collection_made_without_it_says_how_to_fix(milvus_uri) -> None:
    images = ImageStore(uri=milvus_uri)
    try:
        CaptionStore(images).ensure(dim=8, model="m")
        with pytest.raises(CollectionMismatchError, match="overwrite=True"):
            CaptionStore(images, bm25="milvus").ensure(dim=8, model="m")
    finally:
        images.close()
