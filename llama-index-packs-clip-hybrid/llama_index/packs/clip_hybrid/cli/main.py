"""The ``clip-hybrid`` command: index a folder, search it by text or by image.

Exit codes: 0 success (also when some files were skipped and reported), 2 usage errors,
1 anything else, with a one-line message on stderr (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..clip.embedding import DEFAULT_CLIP_MODEL
from ..milvus.database import DEFAULT_URI
from ..milvus.images import DEFAULT_COLLECTION


class UsageError(Exception):
    """Bad command-line usage: exit code 2."""


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
        default=os.environ.get("CLIP_HYBRID_CLIP_MODEL", DEFAULT_CLIP_MODEL),
        help="CLIP model name or checkpoint path, or none for the caption-only mode "
        "(env CLIP_HYBRID_CLIP_MODEL)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


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
    index.add_argument("--batch-size", type=int, default=64)
    index.add_argument("--no-progress", action="store_true", help="no progress bar")
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


def _pack(args: argparse.Namespace, **extra: Any) -> Any:
    from ..pack import ClipHybridPack

    return ClipHybridPack(
        uri=args.db,
        token=os.environ.get("MILVUS_TOKEN") or None,
        collection_name=args.collection,
        clip_model=args.clip_model,
        device=args.device,
        precision=args.precision,
        **extra,
    )


def _index(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be >= 1, got {args.concurrency}")
    show = None if not args.no_progress and not args.json else False
    pack = _pack(
        args,
        batch_size=args.batch_size,
        show_progress=show,
        captioner=args.captioner,
        caption_model=args.caption_model,
        caption_lang=args.caption_lang,
        caption_embed=args.caption_embed,
        caption_concurrency=args.concurrency,
        bm25=args.bm25 or "auto",
    )
    try:
        report = pack.ingest(args.paths, sync=args.sync, recursive=not args.no_recursive)
    finally:
        pack.store.close()
    if args.json:
        print(
            json.dumps(
                {
                    "db": args.db,
                    "collection": args.collection,
                    "indexed": report.indexed,
                    "unchanged": report.unchanged,
                    "reused": report.reused,
                    "removed": report.removed,
                    "seen": report.seen,
                    "forward_passes": report.forward_passes,
                    "seconds": round(report.seconds, 3),
                    "failures": [{"path": f.path, "reason": f.reason} for f in report.failed],
                    "captions": _caption_summary(report.captions),
                },
                ensure_ascii=False,
            )
        )
    else:
        print(
            f"indexed {report.indexed}, unchanged {report.unchanged}, removed {report.removed}, "
            f"failed {len(report.failed)} ({report.seconds:.1f}s) -> {args.db}"
        )
        for failure in report.failed:
            print(f"  skipped {failure.path}: {failure.reason}")
        captions = report.captions
        if captions is None:
            print("captions: off (see --captioner)")
        else:
            usage = captions.usage
            print(
                f"captions by {captions.captioner}: {captions.captioned} new, "
                f"{captions.cached} cached, {len(captions.failed)} failed "
                f"({usage.calls} calls, {usage.retries} retries, {usage.total_tokens} tokens)"
            )
            for failure in captions.failed:
                print(f"  no caption for {failure.path or failure.key}: {failure.reason}")
    return 0


def _caption_summary(report: Any) -> dict[str, Any] | None:
    """The JSON form of a CaptionReport (None when captions are off)."""
    if report is None:
        return None
    return {
        "captioner": report.captioner,
        "captioned": report.captioned,
        "cached": report.cached,
        "empty": report.empty,
        "failed": len(report.failed),
        "failures": [{"path": f.path, "id": f.key, "reason": f.reason} for f in report.failed],
        "usage": report.usage.to_dict(),
        "seconds": round(report.seconds, 3),
    }


def _filters(pairs: Sequence[str]) -> Any:
    if not pairs:
        return None
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    out: list[MetadataFilter | MetadataFilters] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--filter {pair!r} is not KEY=VALUE")
        parsed: Any = value
        for cast in (int, float):
            try:
                parsed = cast(value)
                break
            except ValueError:
                continue
        out.append(MetadataFilter(key=key, value=parsed))
    return MetadataFilters(filters=out)


def _require_index(args: argparse.Namespace) -> None:
    """A local --db that does not exist is a mistyped path: say so before opening it
    (Milvus Lite would create an empty database there)."""
    if "://" not in args.db and not os.path.exists(args.db):
        raise RuntimeError(f"No index at {args.db}; run: clip-hybrid index PATH --db {args.db}")


def _search(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if (args.query is None) == (args.image is None):
        raise UsageError("give either a text QUERY or --image PATH")
    mode = args.mode or ("image" if args.image else "text")
    if args.clip_model == "none" and args.mode is None:
        mode = "hybrid"  # caption-only index: the caption branches are all there is
    if mode == "hybrid" and args.keep_self_hit:
        raise UsageError("--keep-self-hit applies to --mode image")
    if mode == "image" and args.image is None:
        raise UsageError("--mode image needs --image PATH")
    if mode == "text" and args.query is None:
        raise UsageError("--mode text needs a text QUERY")
    if args.query is not None and not args.query.strip():
        raise UsageError("the text QUERY is empty; type something to search for")
    _require_index(args)
    pack = _pack(args)
    try:
        return _run_search(args, pack, mode)
    finally:
        pack.store.close()


def _run_search(args: argparse.Namespace, pack: Any, mode: str) -> int:
    if not pack.store.open_existing():
        raise RuntimeError(
            f"No index at {args.db} (collection {args.collection!r}); "
            f"run: clip-hybrid index PATH --db {args.db}"
        )
    query: Any = Path(args.image) if args.image else args.query
    if mode == "hybrid":
        return _run_hybrid(args, pack, query)
    hits, report = pack.search(
        query,
        mode=mode,
        similarity_top_k=args.top_k,
        filters=_filters(args.filter),
        keep_self_hit=args.keep_self_hit,
    )
    dropped = report.dropped if report else []
    paths = {d.node_id: None for d in dropped}
    results = [
        {
            "rank": rank,
            "id": hit.node.node_id,
            "path": hit.node.metadata.get("file_path"),
            "score": hit.score,
            "category": hit.node.metadata.get("category"),
        }
        for rank, hit in enumerate(hits, 1)
    ]
    filtered = [
        {"id": d.node_id, "score": d.score, "reason": d.reason, "path": paths.get(d.node_id)}
        for d in dropped
    ]
    if report is not None and filtered:
        rows = pack.store.get([d["id"] for d in filtered], ["path"])
        for item in filtered:
            item["path"] = rows.get(item["id"], {}).get("path")
    if args.json:
        print(
            json.dumps(
                {
                    "query": args.image or args.query,
                    "mode": mode,
                    "results": results,
                    "filtered_self_hits": filtered,
                },
                ensure_ascii=False,
            )
        )
        return 0
    for item in results:
        print(f"{item['rank']:>3}. {item['score']:.4f}  {item['path']}")
    for item in filtered:
        print(f"     filtered self-hit {item['score']:.4f} ({item['reason']}): {item['path']}")
    if not results:
        print("no results")
    return 0


def _run_hybrid(args: argparse.Namespace, pack: Any, query: Any) -> int:
    from ..hybrid.fusion import branch_table, format_branches

    hits = pack.retrieve(
        query, mode="hybrid", similarity_top_k=args.top_k, filters=_filters(args.filter)
    )
    rows = branch_table(hits)
    for row in rows:
        row["category"] = next(
            (h.node.metadata.get("category") for h in hits if h.node.node_id == row["id"]), None
        )
    if args.json:
        print(
            json.dumps(
                {
                    "query": args.image or args.query,
                    "mode": "hybrid",
                    "branches": pack.last_branches,
                    "results": rows,
                },
                ensure_ascii=False,
            )
        )
        return 0
    print(f"branches: {', '.join(pack.last_branches)}")
    for row in rows:
        parts = format_branches(row["branches"])
        print(f"{row['rank']:>3}. rrf {row['rrf']:.4f}  {row['path']}  ({parts})")
    if not rows:
        print("no results")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ..preview import serve

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    if args.projection == "umap" and importlib.util.find_spec("umap") is None:
        raise UsageError(
            "--projection umap needs umap-learn: pip install 'llama-index-packs-clip-hybrid[umap]'"
        )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"clip-hybrid: warning: serving on {args.host}: anyone who can reach it can "
            "search your index and see its images.",
            file=sys.stderr,
        )
    _require_index(args)
    pack = _pack(args, captioner="none")
    try:
        serve(
            pack,
            host=args.host,
            port=args.port,
            projection=args.projection,
            ready=lambda url: print(f"Preview at {url} (Ctrl+C to stop)", flush=True),
        )
    except KeyboardInterrupt:
        return 0
    finally:
        pack.store.close()
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..evaluation import MODES, evaluate, load_qrels

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise UsageError(f"--modes takes {', '.join(MODES)}; got {args.modes!r}")
    try:
        qrels = load_qrels(args.qrels)
    except OSError as exc:
        raise UsageError(f"cannot read {args.qrels}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    _require_index(args)
    pack = _pack(args)
    try:
        if not pack.store.open_existing():
            raise RuntimeError(f"No index at {args.db}; run: clip-hybrid index PATH --db {args.db}")
        report = evaluate(pack, qrels, modes)
    finally:
        pack.store.close()
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
        return 0
    print(f"{'mode':<8} {'n':>3} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'nDCG@10':>8}")
    for mode, s in report.modes.items():
        print(
            f"{mode:<8} {s.queries:>3} {s.recall_at_1:>6.3f} {s.recall_at_5:>6.3f} "
            f"{s.recall_at_10:>6.3f} {s.mrr:>6.3f} {s.ndcg_at_10:>8.3f}"
        )
        for lang, ls in report.by_language.get(mode, {}).items():
            print(f"  {lang:<6} {ls.queries:>3} R@5 {ls.recall_at_5:.3f} MRR {ls.mrr:.3f}")
    print(f"misses at 10: {len(report.misses)}")
    for miss in report.misses[:20]:
        print(f"  [{miss['mode']}] {miss['query']} (line {miss['line']})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = {"index": _index, "search": _search, "eval": _eval, "serve": _serve}[args.command]
    if argv is None and args.command == "index":
        # Run as the clip-hybrid program, whose process is its own: keep less freed memory
        # over a long ingestion (memory.py). A Python caller passing argv keeps its settings.
        from ..memory import limit_memory_retention

        logging.getLogger(__name__).debug("memory: %s", ", ".join(limit_memory_retention()))
    try:
        return handler(args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"clip-hybrid: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "clip-hybrid: interrupted; what was written is kept, run again to finish.",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"clip-hybrid: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
