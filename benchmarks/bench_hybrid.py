"""Hybrid query latency vs its slowest single branch, and the cost of fusion itself.

    uv run python benchmarks/bench_hybrid.py [--n 10000] [--queries 50]
    uv run python benchmarks/bench_hybrid.py --uri http://127.0.0.1:19530   # a server

Synthetic data (seeded): N random L2-normalised 512-d "CLIP" vectors in the image
collection, N 384-d caption vectors in the caption collection (Milvus Lite in a temp dir,
or with ``--uri`` a Milvus server, in collections of the benchmark's own, dropped before
and after; created by the pack's stores), and N captions of 12 words drawn from an
English + Chinese vocabulary for BM25. Queries carry a precomputed CLIP vector and the
caption embedder is a constant ``MockEmbedding``: model forward passes are measured in
bench_embedding.py; this measures retrieval and fusion. Each round times every branch
alone and the fused retriever (branches concurrent on threads), interleaved.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, percentile
from _synthetic import WORDS_EN, WORDS_ZH, synthetic_pack, synthetic_rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--uri", help="a Milvus server (default: Milvus Lite in a temp dir)")
    args = parser.parse_args()
    print(machine())

    from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle
    from llama_index.packs.clip_hybrid.bm25 import CaptionBM25Index
    from llama_index.packs.clip_hybrid.hybrid import RRFFusionRetriever

    rng = np.random.default_rng(0)
    words = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        uri = args.uri or str(Path(tmp) / "bench.db")
        print(f"Milvus: {uri}")
        started = time.perf_counter()
        prefix = "clip_hybrid_bench_" if args.uri else ""
        if args.uri:  # the benchmark's own collections, from a previous run
            _drop(*synthetic_pack(uri, prefix=prefix))
        pack, captions = synthetic_pack(uri, prefix=prefix)
        texts = []
        for start in range(0, args.n, 5000):
            rows, cap_rows, chunk_texts, _ = synthetic_rows(
                start, min(5000, args.n - start), rng, words
            )
            texts.extend(chunk_texts)
            pack.store.upsert(rows)
            captions.upsert(cap_rows)
        pack.store.flush()
        captions.flush()
        index = CaptionBM25Index.build(texts)
        index.persist(pack.bm25_path)
        print(f"loaded {args.n} images + captions + BM25 in {time.perf_counter() - started:.0f} s")

        fused = pack.hybrid_retriever(similarity_top_k=10)
        assert fused.branch_names == ["clip", "caption_vector", "bm25"], fused.branch_names
        branches = pack.hybrid_branches(candidates=50)
        q_rng = random.Random(1)
        queries = []
        for _ in range(args.queries):
            vec = rng.standard_normal(512).astype(np.float32)
            vec /= np.linalg.norm(vec)
            text = " ".join(q_rng.choice(WORDS_EN + WORDS_ZH) for _ in range(3))
            queries.append(QueryBundle(query_str=text, embedding=vec.tolist()))
        for q in queries[:3]:  # warm-up
            fused.retrieve(q)
        times: dict[str, list[float]] = {name: [] for name in [*branches, "hybrid"]}
        for q in queries:
            for name, retriever in branches.items():
                t = time.perf_counter()
                retriever.retrieve(q)
                times[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            hits = fused.retrieve(q)
            times["hybrid"].append(time.perf_counter() - t)
            assert len({h.node.node_id for h in hits}) == len(hits)
        if args.uri:
            _drop(pack, captions)
        pack.store.close()

    p50 = {name: statistics.median(v) * 1000 for name, v in times.items()}
    slowest = max(p50[n] for n in branches)
    print(f"\nN = {args.n}, {args.queries} queries, top-10 fused from 3 x 50 candidates")
    for name, values in times.items():
        print(f"  {name:<15} p50 {p50[name]:7.1f} ms   p95 {percentile(values, 95) * 1000:7.1f} ms")
    print(f"  hybrid / slowest branch p50: {p50['hybrid'] / slowest:.2f}x")

    # Fusion alone: 3 branches x 50 candidates (overlapping ids), many runs.
    fusion = RRFFusionRetriever({"a": _Null(), "b": _Null(), "c": _Null()})
    f_rng = random.Random(2)
    results = {
        ("q", b): [
            NodeWithScore(node=ImageNode(id_=f"n{f_rng.randrange(120)}"), score=f_rng.random())
            for _ in range(50)
        ]
        for b in range(3)
    }
    runs = 500
    t = time.perf_counter()
    for _ in range(runs):
        fusion._reciprocal_rerank_fusion(results)
    print(f"  fusion alone (3 x 50 candidates): {(time.perf_counter() - t) / runs * 1000:.3f} ms")


def _drop(pack, captions) -> None:  # type: ignore[no-untyped-def]
    captions.drop()
    pack.store.drop()


class _Null:
    """A branch placeholder for timing the fusion step alone."""

    def __new__(cls):  # type: ignore[no-untyped-def]
        from llama_index.core.base.base_retriever import BaseRetriever

        class _R(BaseRetriever):
            def _retrieve(self, query_bundle):  # type: ignore[no-untyped-def]
                return []

        return _R()


if __name__ == "__main__":
    main()
