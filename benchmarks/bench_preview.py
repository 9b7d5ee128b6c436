"""The preview page: map ready with 10k points, search round trip, projecting 100k vectors.

    uv run python benchmarks/bench_preview.py [--n 10000] [--queries 30]

A Milvus Lite index of N random L2-normalised 512-d vectors (seeded) whose rows all point
at one real image file (thumbnails work), served by the preview server with a full-size
random-weight ViT-B/32 (speed does not depend on weight values). Measured:

- page ready: headless Chromium (Debian's, through Playwright) from navigation until the
  page has drawn its map of N points (it sets body[data-ready]), first load after the
  server started (``serve`` computes the map before it listens; that time is printed too);
- search round trip: POST /api/search text queries over HTTP after warm-up (one CLIP text
  forward, the Milvus Lite search, the map position of the query), p50 and p95;
- projection: PCA fit + transform of 100k random 512-d vectors (numpy).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from _common import machine, percentile, vit_b_32_checkpoint
from _synthetic import image_row
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    print(machine())

    from llama_index.packs.clip_hybrid import ClipHybridPack, FastClipEmbedding
    from llama_index.packs.clip_hybrid.preview import Projection, make_server

    rng = np.random.default_rng(0)
    big = rng.standard_normal((100_000, 512)).astype(np.float32)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    started = time.perf_counter()
    projection = Projection.fit(big)
    projection.transform(big)
    projection_s = time.perf_counter() - started

    checkpoint = vit_b_32_checkpoint()
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "one.png"
        Image.new("RGB", (320, 240), (90, 140, 200)).save(image)
        model = FastClipEmbedding(model_name=str(checkpoint), precision="fp32")
        pack = ClipHybridPack(uri=str(Path(tmp) / "p.db"), embed_model=model, captioner="none")
        pack.store.ensure(dim=512, model=model.model_name)
        vectors = rng.standard_normal((args.n, 512)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for start in range(0, args.n, 5000):
            pack.store.upsert(
                [
                    image_row(i, vectors[i], path=str(image), folder=tmp, size=(320, 240))
                    for i in range(start, min(start + 5000, args.n))
                ]
            )
        pack.store.flush()
        server = make_server(pack, port=0)
        started = time.perf_counter()
        # Changed: the stdlib handler class is gone; serve() now warms server.app (the map).
        server.app.warm()  # what serve() does before listening
        startup_s = time.perf_counter() - started
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        try:
            ready_s = _page_ready(url, args.n)
            times = _searches(url, args.queries)
        finally:
            server.shutdown()
            pack.store.close()

    print(f"\nN = {args.n}")
    print(f"  server start-up: map of {args.n} points computed in {startup_s:.2f} s")
    print(
        f"  page ready (map of {args.n} points drawn): first load {ready_s[0]:.2f} s, "
        f"then {', '.join(f'{t:.2f}' for t in ready_s[1:])} s"
    )
    print(
        f"  search round trip, text, p50 {statistics.median(times) * 1000:.0f} ms, "
        f"p95 {percentile(times, 95) * 1000:.0f} ms ({len(times)} queries after warm-up)"
    )
    print(f"  PCA projection of 100,000 x 512 vectors: {projection_s:.2f} s")


def _page_ready(url: str, n: int, loads: int = 3) -> list[float]:
    """Seconds from navigation to the drawn map, for ``loads`` fresh pages (first = cold)."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    took = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        for _ in range(loads):
            page = browser.new_page()
            started = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=120_000)
            took.append(time.perf_counter() - started)
            stats = page.evaluate("window.previewMap.stats()")
            assert stats["points"] == n, stats
            page.close()
        browser.close()
    print(f"  map renderer: {stats['renderer']}")
    return took


def _searches(url: str, count: int) -> list[float]:
    words = ["diagram", "chart", "a photo of a cat", "sunset", "user interface", "架构图"]

    def ask(text: str) -> None:
        body = json.dumps({"mode": "text", "query": text, "top_k": 8}).encode()
        request = urllib.request.Request(
            url + "api/search", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as res:
            assert res.status == 200
            json.loads(res.read())

    for text in words[:3]:
        ask(text)  # warm-up: the model load and the first forward passes
    times = []
    for i in range(count):
        started = time.perf_counter()
        ask(f"{words[i % len(words)]} {i}")
        times.append(time.perf_counter() - started)
    return times


if __name__ == "__main__":
    main()
