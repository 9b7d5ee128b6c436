"""Shared helpers for the benchmarks (run by hand; never part of the test suite)."""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llama_index.packs.clip_hybrid.testing import TinyClipConfig, make_tiny_clip_checkpoint
from PIL import Image

CACHE = Path(
    os.environ.get("CLIP_HYBRID_BENCH_CACHE", Path.home() / ".cache" / "clip-hybrid-bench")
)

#: OpenAI ViT-B/32's shapes. Random weights: speed does not depend on weight values.
VIT_B_32 = TinyClipConfig(
    embed_dim=512,
    image_resolution=224,
    vision_layers=12,
    vision_width=768,
    vision_patch_size=32,
    context_length=77,
    vocab_size=49408,
    transformer_width=512,
    transformer_heads=8,
    transformer_layers=12,
)


def vit_b_32_checkpoint() -> Path:
    """A full-size random-weight ViT-B/32 TorchScript checkpoint (built once, ~300 MB).

    Its weights are stored in fp16, as in OpenAI's published ViT-B-32.pt, so that loading
    it costs what loading the real one costs.
    """
    path = CACHE / "vit-b-32-random-fp16.pt"
    if not path.exists():
        make_tiny_clip_checkpoint(path, seed=0, config=VIT_B_32, half=True)
    return path


def make_photos(folder: Path, count: int, *, size: tuple[int, int] = (640, 480)) -> list[Path]:
    """``count`` seeded JPEG 'photos' (gradients and shapes): realistic decode cost."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:06d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        rng = random.Random(i)
        img = Image.linear_gradient("L").resize(size).convert("RGB")
        tint = Image.new(
            "RGB", size, (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        )
        img = Image.blend(img, tint, 0.5)
        from PIL import ImageDraw

        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x, y = rng.randint(0, size[0]), rng.randint(0, size[1])
            r = rng.randint(10, 120)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(rng.randint(0, 255),) * 3)
        img.save(path, format="JPEG", quality=88)
    return paths


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads"


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
