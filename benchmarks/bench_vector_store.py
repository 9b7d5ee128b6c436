"""Should the pack's hot path go through LlamaIndex's MilvusVectorStore? Both paths, one run.

    uv run python benchmarks/bench_vector_store.py [--n 100000] [--queries 200] [--ingest 10000]

Queries: random L2-normalised 512-d vectors (seed 0) in a Milvus Lite collection made by
ImageStore (IVF_FLAT, COSINE). Each query vector is asked, interleaved, of the pack's
``ClipTextToImageRetriever`` (top-10 image nodes with their rows) and of a
``VectorStoreIndex`` retriever over ``pack.vector_store("images")`` (the same top-10, as
nodes): the query p50 of each and their ratio.

Ingestion: ``--ingest`` rows of 512-d vectors written into a new collection, once through
``ImageStore.upsert`` (what ingestion writes) and once through ``MilvusVectorStore.add``
(``upsert_mode``) of the same rows as ``ImageNode``s, each in a fresh process: the peak RSS
above the process's baseline after imports, and the seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, percentile
from _synthetic import image_row

HERE = Path(__file__).resolve().parent


def _rows(lo: int, hi: int, data: np.ndarray) -> list[dict]:
    return [
        image_row(i, data[i - lo], path=f"/photos/{i}.jpg", folder="/photos", size=(640, 480))
        for i in range(lo, hi)
    ]


def _vectors(n: int, seed: int, dim: int = 512) -> np.ndarray:
    data = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def ingest_child(path: str, how: str, n: int) -> None:
    """One ingestion in this (fresh) process; prints JSON: seconds and RSS above baseline."""
    from llama_index.core.schema import ImageNode
    from llama_index.packs.clip_hybrid import ImageStore

    store = ImageStore(uri=path)
    store.ensure(dim=512)
    if how == "store":
        from llama_index.packs.clip_hybrid.milvus.vector_store import llama_vector_store

        vector_store = llama_vector_store({"images": store}, "images", upsert_mode=True)
    base = _reset_peak_rss()
    start = time.perf_counter()
    for lo in range(0, n, 1000):
        hi = min(lo + 1000, n)
        rows = _rows(lo, hi, _vectors(hi - lo, lo))
        if how == "ours":
            store.upsert(rows)
        else:
            nodes = [
                ImageNode(
                    id_=r["id"],
                    embedding=r["vector"],
                    image_path=r["path"],
                    metadata={k: v for k, v in r.items() if k not in ("id", "vector")},
                )
                for r in rows
            ]
            vector_store.add(nodes)
    store.flush()
    seconds = time.perf_counter() - start
    assert store.count() == n, store.count()
    print(json.dumps({"seconds": seconds, "rss_mb": _status_mb("VmHWM") - base}))


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        line = next(line for line in fh if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024


def _reset_peak_rss() -> float:
    """Reset this process's peak RSS (Linux: ``5`` to ``clear_refs``) to what it uses now,
    so the imports' own peak is not counted; returns that RSS in MB."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _status_mb("VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest", type=int, default=10_000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        ingest_child(args.child[0], args.child[1], int(args.child[2]))
        return

    from llama_index.core import VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.schema import QueryBundle
    from llama_index.packs.clip_hybrid import ClipTextToImageRetriever, ImageStore
    from llama_index.packs.clip_hybrid.milvus.vector_store import llama_vector_store

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        # -- ingestion: fresh processes, alternated, 2 rounds ---------------------------
        results: dict[str, list[dict]] = {"ours": [], "store": []}
        for rnd in range(2):
            for how in ("ours", "store"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        f"{tmp}/ing{rnd}{how}.db",
                        how,
                        str(args.ingest),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=HERE,
                )
                results[how].append(json.loads(out.stdout.strip().splitlines()[-1]))
        for how, runs in results.items():
            rss = ", ".join(f"{r['rss_mb']:.0f}" for r in runs)
            secs = ", ".join(f"{r['seconds']:.1f}" for r in runs)
            print(f"ingest {args.ingest} rows via {how:5}: peak RSS +{rss} MB; {secs} s")
        ratio = min(r["rss_mb"] for r in results["store"]) / max(
            1.0, min(r["rss_mb"] for r in results["ours"])
        )
        print(f"ingest peak RSS, store / ours (best of each): {ratio:.2f}")

        # -- queries at n ---------------------------------------------------------------
        store = ImageStore(uri=str(Path(tmp) / "query.db"))
        store.ensure(dim=512)
        for lo in range(0, args.n, 5000):
            hi = min(lo + 5000, args.n)
            store.upsert(_rows(lo, hi, _vectors(hi - lo, lo)))
        store.flush()
        ours = ClipTextToImageRetriever(store=store, embed_model=None, similarity_top_k=10)  # type: ignore[arg-type]
        index = VectorStoreIndex.from_vector_store(
            llama_vector_store({"images": store}, "images"), embed_model=MockEmbedding(embed_dim=1)
        )
        theirs = index.as_retriever(similarity_top_k=10)
        queries = _vectors(args.queries, 10**6)
        times: dict[str, list[float]] = {"ours": [], "store": []}
        for i, q in enumerate(queries):
            bundle = QueryBundle(query_str="q", embedding=q.tolist())
            order = (("ours", ours), ("store", theirs))
            for name, retriever in order if i % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                hits = retriever.retrieve(bundle)
                times[name].append((time.perf_counter() - t0) * 1000)
                assert len(hits) == 10
            a = [h.node.node_id for h in ours.retrieve(bundle)] if i < 5 else None
            if a is not None:
                assert a == [h.node.node_id for h in theirs.retrieve(bundle)]
        p50 = {k: percentile(v, 50) for k, v in times.items()}
        print(
            f"top-10 query at {args.n}: p50 ours {p50['ours']:.1f} ms, MilvusVectorStore "
            f"{p50['store']:.1f} ms (p95 {percentile(times['ours'], 95):.1f} / "
            f"{percentile(times['store'], 95):.1f}); store / ours {p50['store'] / p50['ours']:.2f}"
        )
        store.close()


if __name__ == "__main__":
    main()
