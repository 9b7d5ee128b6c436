"""Cold start of the ``clip-hybrid`` program, beside the imports it cannot avoid.

    uv run python benchmarks/bench_cold_start.py               # 1,000 images, 3 rounds

Each measurement is a new process, timed wall-clock, in one run, in turn (round robin,
so a busy moment of the machine hits every row alike); the median of ``--rounds``:

- ``import torch, llama_index.core``: the floor of any command that embeds a query;
- ``clip-hybrid --help``;
- ``clip-hybrid search --mode text`` on a 1,000-image index, with the tiny test
  checkpoint, and with a full-size random-weight ViT-B/32 (the text tower loads);
- ``clip-hybrid index`` again on the unchanged folder (no model may load at all).

The targets (issue 16): ``--help`` <= 0.5 s; a one-shot text search within 1.5 s of the
two imports; the no-op re-index within 1 s of them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import CACHE, machine, vit_b_32_checkpoint

SCRIPT = str(Path(sys.executable).parent / "clip-hybrid")


def _images(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        sub = folder / f"kind{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"{i:05d}.jpg", quality=85)


def _wall(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from llama_index.packs.clip_hybrid.testing import make_tiny_clip_checkpoint

    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    folder = work / "images"
    _images(folder, args.images)
    tiny = make_tiny_clip_checkpoint(CACHE / "tiny-clip-seed0.pt", seed=0)
    full = vit_b_32_checkpoint()
    indexes = {}
    for name, checkpoint in (("tiny", tiny), ("ViT-B/32", full)):
        db = str(work / f"{name.replace('/', '-')}.db")
        _wall([SCRIPT, "index", str(folder), "--db", db, "--clip-model", str(checkpoint)])
        indexes[name] = db

    commands = {
        "import torch, llama_index.core": [sys.executable, "-c", "import torch, llama_index.core"],
        "clip-hybrid --help": [SCRIPT, "--help"],
        "search --mode text (tiny)": [SCRIPT, "search", "a chart", "--db", indexes["tiny"]],
        "search --mode text (ViT-B/32)": [SCRIPT, "search", "a chart", "--db", indexes["ViT-B/32"]],
        "index, unchanged (tiny)": [SCRIPT, "index", str(folder), "--db", indexes["tiny"]],
    }
    for command in commands.values():  # warm the page cache and any bytecode
        _wall(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, command in commands.items():
            times[name].append(_wall(command))

    print(f"{machine()}; {args.images} images; median of {args.rounds} rounds (range)")
    floor = statistics.median(times["import torch, llama_index.core"])
    for name, values in times.items():
        median = statistics.median(values)
        over = "" if name.startswith("import") else f"  ({median - floor:+.2f} s over the imports)"
        print(f"{name:34s} {median:6.2f} s ({min(values):.2f}-{max(values):.2f}){over}")


if __name__ == "__main__":
    main()
