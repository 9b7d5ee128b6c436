"""Retrieval quality on the sample images: CLIP-only vs caption-only vs hybrid.

    uv run python benchmarks/bench_eval.py [--clip-model PATH_OR_NAME]

Indexes examples/images into a temporary Milvus Lite database with offline captions (OCR)
and offline caption vectors (all-MiniLM-L6-v2), then scores examples/qrels.jsonl in every
mode with the evaluation harness (what ``clip-hybrid eval`` prints). Without
``--clip-model`` it uses the seeded tiny test CLIP, whose vectors are noise: the CLIP
numbers then say nothing about CLIP, only the caption branches are meaningful. With
real ViT-B/32 weights, pass ``--clip-model ViT-B/32``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip-model", default=None)
    args = parser.parse_args()

    from llama_index.packs.clip_hybrid import ClipHybridPack
    from llama_index.packs.clip_hybrid.evaluation import evaluate, load_qrels
    from llama_index.packs.clip_hybrid.testing import make_tiny_clip_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        model = args.clip_model or str(make_tiny_clip_checkpoint(Path(tmp) / "tiny.pt"))
        pack = ClipHybridPack(
            uri=str(Path(tmp) / "eval.db"),
            clip_model=model,
            captioner="ocr",
            caption_embed="local",
            show_progress=False,
        )
        try:
            pack.ingest(ROOT / "examples" / "images")
            report = evaluate(pack, load_qrels(ROOT / "examples" / "qrels.jsonl"))
        finally:
            pack.close()  # the database and the caption cache
    label = "tiny test CLIP (noise)" if args.clip_model is None else args.clip_model
    print(f"CLIP: {label}; captions: OCR; caption vectors: all-MiniLM-L6-v2")
    print(f"{'mode':<8} {'n':>3} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'nDCG@10':>8}")
    for mode, s in report.modes.items():
        print(
            f"{mode:<8} {s.queries:>3} {s.recall_at_1:>6.3f} {s.recall_at_5:>6.3f} "
            f"{s.recall_at_10:>6.3f} {s.mrr:>6.3f} {s.ndcg_at_10:>8.3f}"
        )


if __name__ == "__main__":
    main()
