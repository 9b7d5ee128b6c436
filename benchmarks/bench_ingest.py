"""Ingestion: first run vs unchanged re-run, and peak memory on a large folder.

    uv run python benchmarks/bench_ingest.py --images 1000            # re-index ratio
    uv run python benchmarks/bench_ingest.py --images 10000 --rss     # peak RSS only
    uv run python benchmarks/bench_ingest.py --images 300 --rss --workers 1   # one decode thread
    uv run python benchmarks/bench_ingest.py --images 4096 --rss --device cuda   # on a GPU

Each run is a fresh process set up as ``clip-hybrid index`` sets up its own
(``memory.limit_memory_retention``: 2 malloc arenas, pyarrow on the system allocator);
``--keep-allocator`` leaves the process as a Python program that did not call it.

Full-size ViT-B/32 shapes, random weights, Milvus Lite in a temp dir, 640x480 JPEGs.
The CLIP image index only (captioner "none"); --captioner ocr adds offline OCR captions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from _common import CACHE, machine, make_photos, peak_rss_mb, vit_b_32_checkpoint
from llama_index.packs.clip_hybrid import ClipHybridPack


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_once(
    folder: Path,
    db: str,
    batch_size: int,
    captioner: str,
    workers: int | None = None,
    device: str | None = None,
) -> dict[str, float]:
    pack = ClipHybridPack(
        device=device,
        uri=db,
        clip_model=str(vit_b_32_checkpoint()),
        show_progress=False,
        batch_size=batch_size,
        captioner=captioner,
        workers=workers,
    )
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:  # current RSS twice a second, to see whether it grows
        while not done.wait(0.5):
            samples.append(_current_rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    report = pack.ingest(folder)
    done.set()
    thread.join()
    pack.close()  # the database and the caption cache
    quarter = max(1, len(samples) // 4)
    return {
        "seconds": report.seconds,
        "forward_passes": report.forward_passes,
        "indexed": report.indexed,
        "unchanged": report.unchanged,
        "peak_rss_mb": peak_rss_mb(),
        "rss_first_quarter_max_mb": max(samples[:quarter] or [0.0]),
        "rss_last_quarter_max_mb": max(samples[-quarter:] or [0.0]),
        "gpu_peak_mb": _gpu_peak_mb(),
    }


def _gpu_peak_mb() -> float:
    """The most GPU memory torch held at once in this process (0 without CUDA)."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0.0
    return float(torch.cuda.max_memory_allocated()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rss", action="store_true", help="one first run in a child process")
    parser.add_argument("--captioner", default="none", help="none (default) or ocr")
    parser.add_argument("--workers", type=int, default=None, help="decode threads (default: cores)")
    parser.add_argument(
        "--keep-allocator", action="store_true", help="do not call limit_memory_retention"
    )
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when there is one)")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if not args.keep_allocator:
            from llama_index.packs.clip_hybrid.memory import limit_memory_retention

            limit_memory_retention()
        result = run_once(
            Path(args.child[0]),
            args.child[1],
            args.batch_size,
            args.captioner,
            args.workers,
            args.device,
        )
        print(json.dumps(result))
        return
    vit_b_32_checkpoint()
    folder = CACHE / f"photos-{args.images}"
    make_photos(folder, args.images)
    print(f"machine: {machine()}; {args.images} images in {folder}; captioner {args.captioner}")
    print("allocator: " + ("as is" if args.keep_allocator else "limit_memory_retention()"))
    print(f"decode threads: {args.workers or 'the cores available'}")
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        runs = 1 if args.rss else 2
        for i in range(runs):
            # Each run in a fresh process: a cold start, as a user's re-run is.
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(folder),
                    db,
                    "--batch-size",
                    str(args.batch_size),
                    "--captioner",
                    args.captioner,
                    *(["--keep-allocator"] if args.keep_allocator else []),
                    *(["--workers", str(args.workers)] if args.workers else []),
                    *(["--device", args.device] if args.device else []),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            label = "first run" if i == 0 else "unchanged re-run"
            print(
                f"{label}: {result['seconds']:.2f}s ingest, {result['forward_passes']} forward "
                f"passes, indexed {result['indexed']}, unchanged {result['unchanged']}, "
                f"peak RSS {result['peak_rss_mb']:.0f} MB (process lifetime, model load "
                f"included); current RSS max in the first quarter of the run "
                f"{result['rss_first_quarter_max_mb']:.0f} MB, in the last quarter "
                f"{result['rss_last_quarter_max_mb']:.0f} MB; GPU memory peak "
                f"{result['gpu_peak_mb']:.0f} MB (0: no GPU used)"
            )
            if i == 0:
                first = result["seconds"]
                print(
                    f"  {args.images / first:.1f} images/s end to end (decode -> vectors -> Milvus)"
                )
            else:
                print(f"  re-run / first run = {result['seconds'] / first:.3f} (target <= 0.10)")


if __name__ == "__main__":
    main()
