"""Does ingestion keep every core decoding? The pipeline with a zero-cost model vs decoding alone.

    uv run python benchmarks/bench_decode.py [--images 1000] [--rounds 2]
    uv run python benchmarks/bench_decode.py --size 160x120 --model-ms 20   # GPU-like model

640x480 JPEGs (made like the other benchmarks' photos). Decoding alone: each image opened
at the working size and resized to CLIP's 224 x 224, as ingestion does, on one thread and on
a process per core (the all-core decode rate). The pipeline: ``ImageIngestor`` into a new
Milvus Lite collection (hash, lookup, decode, write) with full-size ViT-B/32 preprocessing
and a model that costs nothing (constant unit vectors instead of the forward pass: for
this benchmark only), with one decode thread and with ``workers`` = the cores. Each
pipeline rate is given as a ratio to the all-core decode rate (the target: >= 0.8).

``--model-ms`` makes the model take that long per batch of images while leaving the CPU
free, as a forward pass on a GPU does (it sleeps): with small photos (``--size``) decoding
is then no longer the bottleneck, and what the pipeline does beside the model shows (a
Milvus write on the model's thread adds to every batch; on a writer thread it overlaps).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from _common import CACHE, machine, make_photos, vit_b_32_checkpoint
from llama_index.packs.clip_hybrid import FastClipEmbedding, ImageStore
from llama_index.packs.clip_hybrid._util import available_cores, chunks
from llama_index.packs.clip_hybrid.images.decode import open_working_image
from llama_index.packs.clip_hybrid.ingest.ingestor import ImageIngestor

_MODEL: FastClipEmbedding | None = None


class ZeroCostClip(FastClipEmbedding):
    """ViT-B/32's preprocessing, no forward pass: every image gets the same unit vector
    (after ``MODEL_SECONDS`` per batch without using the CPU, when set)."""

    MODEL_SECONDS: ClassVar[float] = 0.0

    def embed_pil_batches(self, batches: Any) -> list[list[float]]:
        count = 0
        for batch in batches:
            count += len(batch)
            time.sleep(self.MODEL_SECONDS)
        return [[1.0] + [0.0] * 511 for _ in range(count)]


def _model() -> FastClipEmbedding:
    global _MODEL
    if _MODEL is None:
        _MODEL = ZeroCostClip(model_name=str(vit_b_32_checkpoint()), precision="fp32")
    return _MODEL


def _decode_some(paths: list[str]) -> int:
    model = _model()
    for path in paths:
        model.model_sized(open_working_image(path))
    return len(paths)


def decode_rate(paths: list[Path], processes: int) -> float:
    names = [str(p) for p in paths]
    if processes == 1:
        _decode_some(names[:4])  # the checkpoint's preprocessing, loaded
        start = time.perf_counter()
        _decode_some(names)
        return len(names) / (time.perf_counter() - start)
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_decode_some, [names[:2]] * processes))  # each worker loaded
        start = time.perf_counter()
        done = sum(pool.map(_decode_some, chunks(names, 16)))
        return done / (time.perf_counter() - start)


def pipeline_rate(paths: list[Path], workers: int, tmp: str, tag: str) -> float:
    store = ImageStore(uri=f"{tmp}/{tag}.db")
    ingestor = ImageIngestor(
        store=store, embed_model=_model(), show_progress=False, workers=workers
    )
    start = time.perf_counter()
    report = ingestor.ingest([str(p) for p in paths])
    seconds = time.perf_counter() - start
    assert report.indexed == len(paths) and not report.failed, report
    store.close()
    return len(paths) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", default="640x480", help="the photos' WIDTHxHEIGHT")
    parser.add_argument("--model-ms", type=float, default=0.0, help="per batch, CPU left free")
    args = parser.parse_args()
    cores = available_cores()
    width, height = (int(v) for v in args.size.split("x"))
    paths = make_photos(CACHE / f"photos_{args.size}", args.images, size=(width, height))
    ZeroCostClip.MODEL_SECONDS = args.model_ms / 1000
    print(f"model: {args.model_ms} ms per batch of 64 (CPU free); photos {args.size}")
    print(f"machine: {machine()}; cores available: {cores}")
    _model().model_sized(open_working_image(str(paths[0])))
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            one = decode_rate(paths, 1)
            all_cores = decode_rate(paths, cores)
            serial = pipeline_rate(paths, 1, tmp, f"r{rnd}w1")
            parallel = pipeline_rate(paths, cores, tmp, f"r{rnd}w{cores}")
            print(
                f"round {rnd + 1}: decode alone {one:.0f} images/s on 1 thread, "
                f"{all_cores:.0f} on {cores} processes; pipeline with a zero-cost model: "
                f"{serial:.0f} images/s with 1 decode thread ({serial / all_cores:.2f} of "
                f"all-core decoding), {parallel:.0f} with {cores} ({parallel / all_cores:.2f})"
            )


if __name__ == "__main__":
    main()
