"""Retrieval quality on the sample images: CLIP-only vs caption-only vs hybrid, and the
caption branches one by one, per language, with both BM25 backends.

    uv run python benchmarks/bench_eval.py [--clip-model PATH_OR_NAME] [--backends bm25s,milvus]

Indexes examples/images into a temporary Milvus Lite database with offline captions (OCR)
and offline caption vectors (all-MiniLM-L6-v2), then scores examples/qrels.jsonl with the
evaluation harness (what ``clip-hybrid eval`` prints): every mode, then the caption
configurations (BM25 only, caption vectors only, both) per language, on every text query
and on the hard half alone (the ``hard_text_*`` slides: bold, tight, small, mixed text that
OCR reads with words glued together). Without ``--clip-model`` it uses the seeded tiny
test CLIP, whose vectors are noise: the CLIP numbers then say nothing about CLIP, only the
caption branches are meaningful. With real ViT-B/32 weights, pass ``--clip-model ViT-B/32``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: The caption configurations: name -> the hybrid branches that run.
CONFIGS = {
    "BM25 only": ("bm25",),
    "caption vectors only": ("caption_vector",),
    "both": ("caption_vector", "bm25"),
}


class _Branches:
    """A pack whose caption-mode searches run only ``branches`` (for the evaluation)."""

    def __init__(self, pack: Any, branches: tuple[str, ...]) -> None:
        self.pack, self.branches, self.store = pack, branches, pack.store

    def retrieve(self, query: Any, **kwargs: Any) -> Any:
        return self.pack.retrieve(query, **{**kwargs, "branches": self.branches})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip-model", default=None)
    parser.add_argument("--backends", default="bm25s,milvus")
    args = parser.parse_args()

    from llama_index.packs.clip_hybrid import ClipHybridPack
    from llama_index.packs.clip_hybrid.evaluation import evaluate, load_qrels
    from llama_index.packs.clip_hybrid.testing import make_tiny_clip_checkpoint

    qrels = load_qrels(ROOT / "examples" / "qrels.jsonl")
    hard = [q for q in qrels if q.query is not None and "hard_text_" in q.relevant[0]]
    text = [q for q in qrels if q.query is not None]
    rows: list[tuple[str, str, str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.clip_model or str(make_tiny_clip_checkpoint(Path(tmp) / "tiny.pt"))
        for backend in args.backends.split(","):
            pack = ClipHybridPack(
                uri=str(Path(tmp) / f"eval-{backend}.db"),
                clip_model=model,
                captioner="ocr",
                caption_embed="local",
                bm25=backend,
                caption_cache_path=str(Path(tmp) / "captions.sqlite"),
                show_progress=False,
            )
            try:
                pack.ingest(ROOT / "examples" / "images")
                if backend == args.backends.split(",")[0]:
                    _print_modes(evaluate(pack, qrels), args.clip_model)
                for name, branches in CONFIGS.items():
                    for subset, items in (("all", text), ("hard", hard)):
                        report = evaluate(_Branches(pack, branches), items, modes=("caption",))
                        rows.append((backend, name, subset, report.by_language["caption"]))
            finally:
                pack.close()  # the database and the caption cache
    print("\ncaption-only search (OCR captions), per language: R@1 / R@5 / MRR")
    print(f"{'backend':<7} {'branches':<21} {'queries':<7} {'en':>22} {'zh':>22}")
    for backend, name, subset, by_lang in rows:
        cells = []
        for lang in ("en", "zh"):
            s = by_lang.get(lang)
            scores = f"{s.recall_at_1:.3f} {s.recall_at_5:.3f} {s.mrr:.3f}" if s else "-"
            cells.append(f"{scores} ({s.queries:>2})" if s else scores)
        print(f"{backend:<7} {name:<21} {subset:<7} {cells[0]:>22} {cells[1]:>22}")


def _print_modes(report: Any, clip_model: str | None) -> None:
    label = "tiny test CLIP (noise)" if clip_model is None else clip_model
    print(f"CLIP: {label}; captions: OCR; caption vectors: all-MiniLM-L6-v2")
    print(f"{'mode':<8} {'n':>3} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'nDCG@10':>8}")
    for mode, s in report.modes.items():
        print(
            f"{mode:<8} {s.queries:>3} {s.recall_at_1:>6.3f} {s.recall_at_5:>6.3f} "
            f"{s.recall_at_10:>6.3f} {s.mrr:>6.3f} {s.ndcg_at_10:>8.3f}"
        )


if __name__ == "__main__":
    main()
