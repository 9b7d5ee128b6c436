"""Scale: a synthetic 100k-image index, from writing it to the first query of a new process.

    uv run python benchmarks/bench_scale.py [--n 100000] [--queries 50]

Synthetic data (seeded, ``_synthetic.py``), as in bench_hybrid.py: N random
L2-normalised 512-d "CLIP" vectors, N 384-d caption vectors and N 12-word English +
Chinese captions, written through the pack's own stores into Milvus Lite. Model forward
passes are not part of this (see bench_embedding.py and bench_ingest.py for images per
second through CLIP); queries carry precomputed vectors. Measured:

- write rate: image rows and caption rows per second (upsert in chunks of 5,000 + flush);
- BM25: build (jieba + stemming of every caption) and persist;
- on-disk size of the Milvus Lite folder and of the BM25 index;
- warm query latency per mode, p50/p95: text->image (a random CLIP vector), image->image
  (a stored image's vector: the search after the image's forward pass), caption vector,
  BM25, hybrid (all three, fused);
- peak RSS of this process;
- cold start: a new Python process that opens the index and answers one hybrid query
  (imports, Milvus Lite loading the collections, BM25 loading), wall time to the answer.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, peak_rss_mb, percentile
from _synthetic import WORDS_EN, WORDS_ZH, synthetic_pack, synthetic_rows

_COLD = """
import json, sys, time
started = time.perf_counter()
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import QueryBundle
from llama_index.packs.clip_hybrid import ClipHybridPack, FastClipEmbedding
pack = ClipHybridPack(uri=sys.argv[1], embed_model=FastClipEmbedding(model_name="ViT-B/32"),
                      captioner="none", caption_embed=MockEmbedding(embed_dim=384))
vector = json.loads(sys.argv[2])
hits = pack.hybrid_retriever(similarity_top_k=10).retrieve(
    QueryBundle(query_str="diagram 架构", embedding=vector))
assert len(hits) == 10
print(time.perf_counter() - started)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    print(machine())

    from llama_index.core.schema import QueryBundle
    from llama_index.packs.clip_hybrid.hybrid.bm25 import CaptionBM25Index, CaptionText

    rng = np.random.default_rng(0)
    words = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        uri = str(Path(tmp) / "scale.db")
        pack, captions = synthetic_pack(uri)
        texts: list[CaptionText] = []
        image_s = caption_s = 0.0
        kept: list[np.ndarray] = []
        for start in range(0, args.n, 5000):
            rows, cap_rows, chunk_texts, img = synthetic_rows(
                start, min(5000, args.n - start), rng, words
            )
            texts.extend(chunk_texts)
            kept.append(img[:2])
            t = time.perf_counter()
            pack.store.upsert(rows)
            image_s += time.perf_counter() - t
            t = time.perf_counter()
            captions.upsert(cap_rows)
            caption_s += time.perf_counter() - t
        t = time.perf_counter()
        pack.store.flush()
        captions.flush()
        flush_s = time.perf_counter() - t
        t = time.perf_counter()
        CaptionBM25Index.build(texts).persist(pack.bm25_path)
        bm25_s = time.perf_counter() - t
        db_mb = _size_mb(Path(uri))
        bm25_mb = _size_mb(Path(pack.bm25_path))

        stored = np.concatenate(kept)
        fused = pack.hybrid_retriever(similarity_top_k=10)
        branches = pack.hybrid_branches(candidates=50, read_rows=False)  # as the fusion runs them
        image_branch = branches["clip"]  # a stored image's vector: the image->image search
        q_rng = random.Random(1)
        queries = []
        for i in range(args.queries):
            vec = rng.standard_normal(512).astype(np.float32)
            vec /= np.linalg.norm(vec)
            text = " ".join(q_rng.choice(WORDS_EN + WORDS_ZH) for _ in range(3))
            queries.append(
                (QueryBundle(query_str=text, embedding=vec.tolist()), stored[i % len(stored)])
            )
        for q, _ in queries[:3]:  # warm-up
            fused.retrieve(q)
        times: dict[str, list[float]] = {
            "text->image": [],
            "image->image": [],
            "caption vector": [],
            "bm25": [],
            "hybrid": [],
        }
        for q, own in queries:
            for name, run in (
                ("text->image", lambda q=q: branches["clip"].retrieve(q)),
                (
                    "image->image",
                    lambda own=own: image_branch.retrieve(
                        QueryBundle(query_str="image", embedding=own.tolist())
                    ),
                ),
                ("caption vector", lambda q=q: branches["caption_vector"].retrieve(q)),
                ("bm25", lambda q=q: branches["bm25"].retrieve(q)),
                ("hybrid", lambda q=q: fused.retrieve(q)),
            ):
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)
        rss = peak_rss_mb()
        pack.store.close()

        cold = subprocess.run(
            [sys.executable, "-c", _COLD, uri, json.dumps(queries[0][0].embedding)],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if cold.returncode != 0:
            raise SystemExit(cold.stderr[-3000:])
        cold_s = float(cold.stdout.strip().splitlines()[-1])

    n = args.n
    print(f"\nN = {n:,} images with captions (synthetic vectors)")
    print(f"  write: image rows {n / image_s:,.0f}/s, caption rows {n / caption_s:,.0f}/s,")
    print(f"         flush {flush_s:.1f} s; BM25 build + persist {bm25_s:.1f} s")
    print(f"  on disk: Milvus Lite {db_mb:,.0f} MB, BM25 {bm25_mb:,.0f} MB")
    for name, values in times.items():
        print(
            f"  {name:<15} p50 {statistics.median(values) * 1000:7.1f} ms   "
            f"p95 {percentile(values, 95) * 1000:7.1f} ms"
        )
    print(f"  peak RSS of the benchmark process: {rss:,.0f} MB")
    print(f"  cold start, new process to the first hybrid answer: {cold_s:.1f} s")


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


if __name__ == "__main__":
    main()
