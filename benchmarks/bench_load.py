"""The preview server under load: concurrent clients of mixed searches on loopback.

    uv run python benchmarks/bench_load.py [--n 10000] [--clients 20] [--seconds 60]

A Milvus Lite index of N random L2-normalised 512-d vectors (seeded; the rows point at 500
real image files in turn, so image->image queries and thumbnails work), served by the preview
server with a full-size random-weight ViT-B/32 (speed does not depend on weight values).
``--clients`` threads each send requests back to back for ``--seconds``: 50% text->image
searches, 30% image->image searches by id, 10% thumbnails, 10% status. Reported: requests,
errors (any non-200 answer or a connection failure), throughput, and p50/p95/max latency
per kind. The server (waitress) answers on a few worker threads that share one model and
the cores, so latency under load is mostly the queue: expect p95 to grow with the number of
clients.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
from _common import machine, percentile, vit_b_32_checkpoint
from _synthetic import image_row
from PIL import Image

IMAGES = 500
WORDS = ["diagram", "chart", "a photo of a cat", "sunset", "user interface", "架构图", "表格"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(machine())

    from llama_index.packs.clip_hybrid import ClipHybridPack, FastClipEmbedding
    from llama_index.packs.clip_hybrid.preview import make_server

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        images = []  # distinct files, so an image query's self-hit filter drops only its own
        for k in range(IMAGES):
            images.append(Path(tmp) / f"img{k}.png")
            Image.new("RGB", (320, 240), (k % 256, (k * 7) % 256, 200)).save(images[-1])
        model = FastClipEmbedding(model_name=str(vit_b_32_checkpoint()), precision="fp32")
        pack = ClipHybridPack(uri=str(Path(tmp) / "p.db"), embed_model=model, captioner="none")
        pack.store.ensure(dim=512, model=model.model_name)
        vectors = rng.standard_normal((args.n, 512)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for start in range(0, args.n, 5000):
            pack.store.upsert(
                [
                    image_row(
                        i, vectors[i], path=str(images[i % IMAGES]), folder=tmp, size=(320, 240)
                    )
                    for i in range(start, min(start + 5000, args.n))
                ]
            )
        pack.store.flush()
        server = make_server(pack, port=0)
        # Changed: the stdlib handler class is gone; serve() now warms server.app (the map).
        server.app.warm()  # what serve() does before listening
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        try:
            for text in WORDS[:2]:  # warm-up: first forward passes
                _request(url, "text", random.Random(0), args.n, text)
            _request(url, "image", random.Random(0), args.n)
            latencies, errors, wall = _load(url, args)
        finally:
            server.shutdown()
            pack.store.close()

    total = sum(len(v) for v in latencies.values())
    print(f"\nN = {args.n}, {args.clients} clients for {wall:.0f} s (loopback)")
    print(f"  requests {total}, errors {len(errors)}, throughput {total / wall:.1f} req/s")
    for kind, values in sorted(latencies.items()):
        p50, p95 = statistics.median(values) * 1000, percentile(values, 95) * 1000
        print(
            f"  {kind:<6} {len(values):>5} requests: p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms"
        )
    for error in errors[:5]:
        print(f"  error: {error}")


def _load(url: str, args: argparse.Namespace) -> tuple[dict[str, list[float]], list[str], float]:
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + args.seconds

    def client(seed: int) -> None:
        chance = random.Random(seed)
        while time.perf_counter() < deadline:
            roll = chance.random()
            kind = (
                "text"
                if roll < 0.5
                else "image"
                if roll < 0.8
                else "thumb"
                if roll < 0.9
                else "status"
            )
            started = time.perf_counter()
            try:
                _request(url, kind, chance, args.n)
            except Exception as exc:  # counted, never raised: the run goes on
                with lock:
                    errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies[kind].append(time.perf_counter() - started)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - started


def _request(url: str, kind: str, chance: random.Random, n: int, text: str = "") -> None:
    image_id = f"img-{chance.randrange(n):07d}"
    if kind in ("text", "image"):
        payload = (
            {"mode": "text", "query": text or f"{chance.choice(WORDS)} {chance.randrange(1000)}"}
            if kind == "text"
            else {"mode": "image", "image_id": image_id}
        )
        request = urllib.request.Request(
            url + "api/search",
            data=json.dumps({**payload, "top_k": 8}).encode(),
            headers={"Content-Type": "application/json"},
        )
    else:
        request = urllib.request.Request(
            url + ("api/status" if kind == "status" else f"api/image/{image_id}")
        )
    with urllib.request.urlopen(request, timeout=300) as res:
        body = res.read()
        if res.status != 200:
            raise RuntimeError(f"HTTP {res.status}")
    if kind in ("text", "image") and not json.loads(body)["results"]:
        raise RuntimeError("no results")


if __name__ == "__main__":
    main()
