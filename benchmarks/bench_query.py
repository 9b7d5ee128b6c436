"""Query latency and recall: our text->image retriever vs raw pymilvus, 100k vectors.

    uv run python benchmarks/bench_query.py [--n 100000] [--queries 200] [--retriever-only]

Random L2-normalised 512-d vectors (seed 0) in a fresh Milvus Lite collection created
by ImageStore (its Milvus Lite index, IVF_FLAT, COSINE). Each query is timed through
ClipTextToImageRetriever with a precomputed query vector (the CLIP text forward is measured
in bench_embedding.py) and through a raw MilvusClient.search on the same collection,
interleaved. Recall@10 is against exact numpy search, for random queries and for
perturbed copies of stored vectors (closer to real image->image queries). The retriever
reads Milvus Lite in process (_compat/milvus_lite_reads.py, with the cached live-row masks
of _compat/milvus_lite_search.py); nothing of Milvus Lite is patched, so the raw search
runs Milvus Lite's own search code through its gRPC loopback: what a plain pymilvus user
of Milvus Lite gets.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, peak_rss_mb, percentile
from llama_index.core.schema import QueryBundle
from llama_index.packs.clip_hybrid import ClipTextToImageRetriever, ImageStore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument(
        "--retriever-only",
        action="store_true",
        help="time the retriever alone: no raw search between its queries to evict its caches",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    q_rng = np.random.default_rng(1)
    random_q = q_rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    random_q /= np.linalg.norm(random_q, axis=1, keepdims=True)
    picks = q_rng.choice(args.n, args.queries, replace=False)
    near_q = data[picks] + 0.05 * q_rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    near_q /= np.linalg.norm(near_q, axis=1, keepdims=True)

    with tempfile.TemporaryDirectory() as tmp:
        store = ImageStore(uri=str(Path(tmp) / "bench.db"))
        store.ensure(dim=args.dim)
        start = time.perf_counter()
        for lo in range(0, args.n, 5000):
            store.upsert(
                [
                    {
                        "id": f"img{i}",
                        "vector": data[i].tolist(),
                        "path": f"/photos/{i}.jpg",
                        "sha256": f"{i:064x}",
                        "folder": "/photos",
                        "category": "photos",
                        "width": 640,
                        "height": 480,
                        "size": 1,
                        "mtime": 0.0,
                    }
                    for i in range(lo, min(lo + 5000, args.n))
                ]
            )
        store.flush()
        insert_s = time.perf_counter() - start
        start = time.perf_counter()
        store.close()
        store = ImageStore(uri=str(Path(tmp) / "bench.db"))
        store.open_existing()
        store.search(random_q[0].tolist(), limit=10)
        reopen_s = time.perf_counter() - start
        print(f"machine: {machine()}")
        print(
            f"{args.n} vectors inserted + flushed in {insert_s:.1f}s; reopen + load + first "
            f"query {reopen_s:.1f}s; peak RSS {peak_rss_mb():.0f} MB; index {store.index}"
        )

        retriever = ClipTextToImageRetriever(store=store, embed_model=None, similarity_top_k=10)  # type: ignore[arg-type]
        client = store.database.client  # pymilvus' MilvusClient (under the database's lock)
        params = {"metric_type": "COSINE", "params": dict(store.index.search_params)}
        ours_ms: list[float] = []
        raw_ms: list[float] = []
        fields = ["path", "sha256", "folder", "category", "width", "height", "size", "mtime"]

        def raw_search(vector: list[float]) -> None:
            client.search(
                store.collection_name,
                data=[vector],
                limit=10,
                output_fields=fields,
                search_params=params,
                anns_field="vector",
            )

        for name, queries in (("random", random_q), ("perturbed", near_q)):
            exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
            recalls = []
            for qi, q in enumerate(queries):
                vector = q.tolist()
                t0 = time.perf_counter()
                hits = retriever.retrieve(QueryBundle(query_str="q", embedding=vector))
                t1 = time.perf_counter()
                ours_ms.append((t1 - t0) * 1000)
                if not args.retriever_only:
                    raw_search(vector)
                    raw_ms.append((time.perf_counter() - t1) * 1000)
                got = {int(h.node.node_id[3:]) for h in hits}
                recalls.append(len(got & set(exact[qi].tolist())) / 10)
            print(
                f"recall@10 ({name} queries): mean {statistics.mean(recalls):.3f}, "
                f"min {min(recalls):.1f}"
            )
        p50o = percentile(ours_ms, 50)
        if args.retriever_only:
            print(
                f"top-10 latency p50 / p95: retriever {p50o:.1f} / {percentile(ours_ms, 95):.1f} ms"
            )
        else:
            p50r = percentile(raw_ms, 50)
            print(
                f"top-10 latency p50 / p95: retriever {p50o:.1f} / "
                f"{percentile(ours_ms, 95):.1f} ms, raw pymilvus (Milvus Lite's own search) "
                f"{p50r:.1f} / {percentile(raw_ms, 95):.1f} ms; ratio p50 {p50o / p50r:.2f} "
                "(target <= 1.25)"
            )
        numpy_ms = []
        for q in random_q[:50]:
            t0 = time.perf_counter()
            np.argpartition(-(data @ q), 10)[:10]
            numpy_ms.append((time.perf_counter() - t0) * 1000)
        print(f"for scale: exact numpy brute force p50 {percentile(numpy_ms, 50):.1f} ms")


if __name__ == "__main__":
    main()
