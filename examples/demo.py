"""Index the sample images with CLIP in Milvus Lite and search them by text and by image.

    uv run python examples/demo.py [--clip-model ViT-B/32|/path/to/checkpoint.pt]

Text->image scores are real CLIP cosines (low, about 0.2-0.3 for a good match with
ViT-B/32); image->image shows the query image itself coming back at 1.0 and being
filtered out. Running it again re-uses the index: unchanged images are not re-embedded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_QUERIES = ("system architecture diagram", "a bar chart", "mountains at sunset")
HYBRID_QUERY = "系统架构图"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=HERE / "images")
    parser.add_argument(
        "--db",
        default=os.environ.get("CLIP_HYBRID_DB", str(HERE / "clip_hybrid_demo.db")),
        help="Milvus Lite path or http://host:19530",
    )
    parser.add_argument(
        "--clip-model", default=os.environ.get("CLIP_HYBRID_CLIP_MODEL", "ViT-B/32")
    )
    parser.add_argument("--query", action="append", help="text query (repeatable)")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--host", default="127.0.0.1", help="preview page address")
    parser.add_argument("--port", type=int, default=8000, help="preview page port (0: any)")
    parser.add_argument("--no-serve", action="store_true", help="exit instead of serving")
    args = parser.parse_args(argv)
    from llama_index.packs.clip_hybrid.cli import quiet

    # This program owns its process, as the CLI does: the lines native libraries write to
    # stderr (FAISS's "WARNING clustering 63 points to 63 centroids") are dropped.
    quiet.quiet(debug=False)
    try:
        return run(args)
    finally:
        quiet.release()


def run(args: argparse.Namespace) -> int:
    from llama_index.packs.clip_hybrid import ClipHybridPack, ClipWeightsUnavailableError
    from llama_index.packs.clip_hybrid.results import format_branches

    pack = ClipHybridPack(
        uri=args.db, clip_model=args.clip_model, similarity_top_k=args.top_k, show_progress=False
    )
    what = "captions only (no CLIP)" if args.clip_model == "none" else f"CLIP {args.clip_model}"
    print(f"Indexing {args.images} into {args.db} with {what} ...", flush=True)
    try:
        report = pack.ingest(args.images)
    except (ClipWeightsUnavailableError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"Indexed {report.indexed} images ({report.unchanged} unchanged, "
        f"{len(report.failed)} skipped) in {report.seconds:.1f}s."
    )
    _show_captions(pack, report.captions)

    if not pack.has_no_clip:
        for query in args.query or DEFAULT_QUERIES:
            print(f"\ntext->image  {query!r}")
            for rank, hit in enumerate(pack.run(query, mode="text"), 1):
                print(f"  {rank}. {hit.score:.4f}  {_rel(hit.node.metadata['file_path'])}")

        paths = sorted(args.images.rglob("*.png"))
        query_image = next((p for p in paths if p.parent.name == "architecture"), paths[0])
        found = pack.search(query_image)
        print(f"\nimage->image  {_rel(query_image)}")
        for rank, hit in enumerate(found.hits, 1):
            print(f"  {rank}. {hit.score:.4f}  {_rel(hit.node.metadata['file_path'])}")
        for dropped in found.self_hits.dropped if found.self_hits else []:
            print(f"  filtered self-hit: score {dropped.score:.4f} (matched by {dropped.reason})")

    hybrid = pack.search(HYBRID_QUERY, mode="hybrid") if report.captions else None
    if hybrid is not None and hybrid.hits:
        print(f"\nhybrid  {HYBRID_QUERY!r}  (branches: {', '.join(hybrid.branches)})")
        for rank, hit in enumerate(hybrid.hits, 1):
            parts = format_branches(hit.node.metadata["hybrid"]["branches"], digits=3)
            print(
                f"  {rank}. rrf {hit.score:.4f}  {_rel(hit.node.metadata['file_path'])}  ({parts})"
            )

    if args.no_serve:
        pack.close()
        return 0
    from llama_index.packs.clip_hybrid.preview import serve

    try:
        serve(
            pack,
            host=args.host,
            port=args.port,
            ready=lambda url: print(f"\nPreview at {url} (Ctrl+C to stop)", flush=True),
        )
    except KeyboardInterrupt:
        pass
    finally:
        pack.close()
    return 0


def _show_captions(pack: Any, captions: Any) -> None:
    """What the captioner (a VLM with a key, else offline OCR) read in the images."""
    if captions is None:
        print(
            "Captions: off (set OPENAI_API_KEY or DASHSCOPE_API_KEY for a vision LLM, or "
            "install the ocr extra for offline in-image text)."
        )
        return
    print(
        f"Captions by {captions.captioner}: {captions.captioned} new, {captions.cached} "
        f"cached, {len(captions.failed)} failed."
    )
    if not pack.caption_store.exists():
        return
    rows = sorted(pack.caption_store.iter_rows(["path", "text"]), key=lambda r: r["path"])
    for row in [r for r in rows if Path(r["path"]).parent.name.startswith("text_")][:6]:
        text = " ".join(row["text"].split())
        print(f"  {_rel(row['path'])}: {text[:70]}")


def _rel(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(HERE))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
