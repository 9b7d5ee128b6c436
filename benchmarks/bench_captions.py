"""Captioning throughput: VLMCaptionTransform vs the upstream notebook's sequential loop.

    uv run python benchmarks/bench_captions.py [--images 200] [--latency 0.3] [--concurrency 8]

A stub speaking OpenAI's protocol answers every chat request after ``--latency`` seconds;
it runs in its own process (as a real API would: its JSON and HTTP work do not share our
GIL). The same images go through:

1. the upstream notebook's loop: ``OpenAI(model="gpt-4o").chat`` per image, one at a time
   (measured on ``--sequential`` images and extrapolated: the loop is linear);
2. ``VLMCaptionTransform`` at ``--concurrency``, empty cache: compared with the ideal
   images x latency / concurrency;
3. the same again with the cache: zero calls expected.

Then OCR throughput (rapidocr-onnxruntime) on the 18 generated sample images.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine
from PIL import Image

STUB = """
import sys, time
from llama_index.packs.clip_hybrid.testing import ApiStub
stub = ApiStub(latency=float(sys.argv[1])).start()
print(stub.openai_base_url, flush=True)
sys.stdin.read()
"""


def _images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        img = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
        tint = Image.new("RGB", img.size, (i % 256, (i * 37) % 256, (i * 91) % 256))
        path = folder / f"img_{i:04d}.jpg"
        Image.blend(img, tint, 0.5).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=30)
    args = parser.parse_args()
    print(machine())

    from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock
    from llama_index.core.schema import ImageNode
    from llama_index.llms.openai import OpenAI
    from llama_index.packs.clip_hybrid import (
        DEFAULT_CAPTION_PROMPT,
        LLMCaptioner,
        OCRCaptioner,
        VLMCaptionTransform,
    )
    from llama_index.packs.clip_hybrid.testing import make_sample_images

    stub = subprocess.Popen(
        [sys.executable, "-c", STUB, str(args.latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stub.stdout is not None
        base_url = stub.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            paths = _images(Path(tmp) / "img", args.images)
            nodes = [ImageNode(image_path=str(p)) for p in paths]

            started = time.perf_counter()
            captioner = LLMCaptioner.openai(api_key="sk-bench", api_base=base_url)
            transform = VLMCaptionTransform(
                captioner, concurrency=args.concurrency, cache_path=str(Path(tmp) / "c.sqlite")
            )
            setup = time.perf_counter() - started

            # 1. The notebook loop (client already imported by the setup above).
            llm = OpenAI(model="gpt-4o", api_key="sk-bench", api_base=base_url)
            started = time.perf_counter()
            for path in paths[: args.sequential]:
                message = ChatMessage(
                    role="user",
                    blocks=[TextBlock(text=DEFAULT_CAPTION_PROMPT), ImageBlock(path=path)],
                )
                llm.chat([message])
            per_image = (time.perf_counter() - started) / args.sequential
            sequential = per_image * args.images

            # 2. The transform, empty cache.
            started = time.perf_counter()
            out = transform(nodes)
            first = time.perf_counter() - started
            report = transform.last_report
            assert report is not None and report.failed == [], report
            captions = len(out) - len(nodes)

            # 3. Cached.
            started = time.perf_counter()
            transform(nodes)
            cached = time.perf_counter() - started
            again = transform.last_report
            assert again is not None
    finally:
        if stub.stdin is not None:
            stub.stdin.close()
        stub.wait(timeout=10)

    ideal = args.images * args.latency / args.concurrency
    print(f"\ncaptioner setup (client imports): {setup:.2f} s")
    print(
        f"notebook loop: {per_image * 1000:.0f} ms/image over {args.sequential} images "
        f"-> {sequential:.1f} s for {args.images}"
    )
    print(
        f"VLMCaptionTransform, concurrency {args.concurrency}: {first:.2f} s for "
        f"{captions} captions = {first / ideal:.2f}x the ideal {ideal:.2f} s "
        f"({sequential / first:.1f}x faster than the loop); calls {report.usage.calls}"
    )
    print(f"second run, cached: {cached:.3f} s, calls {again.usage.calls}, cached {again.cached}")

    if OCRCaptioner.available():
        with tempfile.TemporaryDirectory() as tmp:
            samples = make_sample_images(tmp, seed=0)
            ocr = OCRCaptioner()
            ocr.read_text(samples[0].path.read_bytes())  # load the ONNX models
            started = time.perf_counter()
            for sample in samples:
                ocr.read_text(sample.path.read_bytes())
            took = time.perf_counter() - started
        print(
            f"OCR (rapidocr-onnxruntime): {len(samples) / took:.2f} images/s "
            f"({took / len(samples) * 1000:.0f} ms/image, {len(samples)} 320x240 samples)"
        )


if __name__ == "__main__":
    main()
