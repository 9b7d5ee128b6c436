"""The ``clip-hybrid`` command line: its subcommands and options (argparse, nothing heavy)."""

from __future__ import annotations

import argparse
import os

from ..options import BRANCHES, DEFAULT_COLLECTION, DEFAULT_URI


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("CLIP_HYBRID_DB", DEFAULT_URI),
        help="Milvus Lite path or http(s)://host:19530 (env CLIP_HYBRID_DB; default %(default)s)",
    )
    parser.add_argument(
        "--collection", default=DEFAULT_COLLECTION, help="collection name (default %(default)s)"
    )
    parser.add_argument(
        "--clip-model",
        default=os.environ.get("CLIP_HYBRID_CLIP_MODEL") or None,
        help="CLIP model name or checkpoint path, or none for the caption-only mode "
        "(env CLIP_HYBRID_CLIP_MODEL; default: the model the index was built with, "
        "ViT-B/32 for a new index)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks, debug logs and library noise"
    )


def _branches(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--branches",
        default=None,
        metavar="LIST",
        help=f"hybrid branches to run, comma-separated ({', '.join(BRANCHES)}; "
        "caption is short for caption_vector); default: every one that can run",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip-hybrid", description="Index images with CLIP in Milvus and search them."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    index = sub.add_parser("index", help="index image files and folders")
    index.add_argument("paths", nargs="+", help="image files or folders")
    index.add_argument(
        "--sync", action="store_true", help="also remove rows of deleted files under the folders"
    )
    index.add_argument("--no-recursive", action="store_true", help="do not walk sub-folders")
    index.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the index with these images (built beside it, swapped in when done; "
        "everything indexed before is then gone)",
    )
    index.add_argument("--batch-size", type=int, default=64)
    index.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decode threads (default: the cores this process may use, cgroup-aware)",
    )
    index.add_argument("--no-progress", action="store_true", help="no progress bars")
    captions = index.add_argument_group("captions (CLIP cannot read in-image text)")
    captions.add_argument(
        "--captioner",
        choices=["auto", "openai", "dashscope", "ocr", "none"],
        default=None,
        help="auto (default; env CLIP_HYBRID_CAPTIONER): GPT-4o with OPENAI_API_KEY, else "
        "Qwen-VL-Max with DASHSCOPE_API_KEY, else offline OCR when installed, else none",
    )
    captions.add_argument("--caption-model", help="VLM model (gpt-4o, qwen-vl-max, ...)")
    captions.add_argument("--caption-lang", help="caption language, e.g. zh or en")
    captions.add_argument(
        "--caption-embed",
        choices=["auto", "openai", "local", "none"],
        default="auto",
        help="caption vectors: text-embedding-3-small (openai), the bundled "
        "all-MiniLM-L6-v2 (local), or none; auto picks openai with a key",
    )
    captions.add_argument(
        "--concurrency", type=int, default=8, help="caption requests in flight (default 8)"
    )
    captions.add_argument(
        "--bm25",
        choices=["bm25s", "milvus"],
        default=None,
        help="BM25 over captions: bm25s in-process (default) or Milvus' own full-text search "
        "(set when the caption collection is created; for servers and clusters)",
    )
    _common(index)

    search = sub.add_parser("search", help="search by text or by image")
    search.add_argument("query", nargs="?", help="text query")
    search.add_argument("--image", help="image file to search with (image->image)")
    search.add_argument(
        "--mode",
        choices=["text", "image", "hybrid"],
        default=None,
        help="text/image: CLIP alone; hybrid: CLIP + caption vectors + BM25 fused by RRF "
        "(with --json, each result's per-branch rank and score)",
    )
    _branches(search)
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument(
        "--keep-self-hit", action="store_true", help="keep the query image in its own results"
    )
    search.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata filter, e.g. category=flowchart (repeatable, all must match)",
    )
    _common(search)

    serve = sub.add_parser("serve", help="the preview page: the map, three search modes")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0: any)")
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this Host name (repeatable; loopback names and the "
        "--host address are always answered, other names are refused against DNS rebinding)",
    )
    serve.add_argument(
        "--projection",
        choices=["pca", "umap"],
        default="pca",
        help="the map's 2D projection (umap needs the [umap] extra; default %(default)s)",
    )
    _common(serve)

    evaluate = sub.add_parser("eval", help="score retrieval against a qrels JSONL file")
    evaluate.add_argument("qrels", help="JSONL: {query|image, relevant: [paths], lang?}")
    evaluate.add_argument(
        "--modes",
        default="text,image,hybrid",
        help="comma-separated: text, image, caption, hybrid (default %(default)s)",
    )
    _common(evaluate)
    return parser


def parse_branches(value: str | None) -> list[str] | None:
    """``--branches`` as branch names (``caption`` is short for ``caption_vector``)."""
    if value is None:
        return None
    names = [part.strip() for part in value.split(",") if part.strip()]
    return ["caption_vector" if name == "caption" else name for name in names]
