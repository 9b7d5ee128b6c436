"""What each ``clip-hybrid`` subcommand does, on a ClipHybridPack, through its public names."""

from __future__ import annotations

import argparse
import importlib.util
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import output


class UsageError(Exception):
    """Bad command-line usage: exit code 2."""


def make_pack(args: argparse.Namespace, **extra: Any) -> Any:
    from ..clip.weights import MODELS
    from ..pack import ClipHybridPack

    model = args.clip_model
    if (
        model
        and model != "none"
        and model not in MODELS
        and not os.path.isfile(os.path.expanduser(model))
    ):
        # before the database is opened: Milvus Lite would leave an empty one behind
        raise UsageError(
            f"--clip-model {output.escape(model)} is neither a known name "
            f"({', '.join(MODELS)}) nor an existing checkpoint file (or none: captions only)"
        )

    return ClipHybridPack(
        uri=args.db,
        token=os.environ.get("MILVUS_TOKEN") or None,
        collection_name=args.collection,
        clip_model=args.clip_model,
        device=args.device,
        precision=args.precision,
        **extra,
    )


def require_index(args: argparse.Namespace) -> None:
    """A local --db that does not exist is a mistyped path: say so before opening it
    (Milvus Lite would create an empty database there)."""
    if "://" not in args.db and not os.path.exists(args.db):
        raise RuntimeError(f"No index at {args.db}; run: clip-hybrid index PATH --db {args.db}")


# -- index ------------------------------------------------------------------------------


def run_index(args: argparse.Namespace, *, progress: bool) -> int:
    missing = [p for p in args.paths if not os.path.lexists(p)]
    if missing:  # a typo, not a file that went away: nothing is opened or created
        raise UsageError(
            f"no such file or folder: {', '.join(output.escape(p) for p in missing)} "
            "(check the path)"
        )
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be >= 1, got {args.concurrency}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    pack = make_pack(
        args,
        batch_size=args.batch_size,
        workers=args.workers,
        show_progress=progress,
        captioner=args.captioner,
        caption_model=args.caption_model,
        caption_lang=args.caption_lang,
        caption_embed=args.caption_embed,
        caption_concurrency=args.concurrency,
        bm25=args.bm25 or "auto",
    )
    with pack:
        report = pack.ingest(
            args.paths, sync=args.sync, recursive=not args.no_recursive, overwrite=args.overwrite
        )
    # Exit 1 when captioning stopped on an error no image could get past (a bad key): the
    # images are indexed, but a script must notice that none will be captioned.
    status = 1 if report.captions is not None and report.captions.stopped else 0
    if args.json:
        output.print_json({"db": args.db, "collection": args.collection, **report.to_dict()})
        return status
    output.line(
        f"indexed {report.indexed}, unchanged {report.unchanged}, removed {report.removed}, "
        f"failed {len(report.failed)} ({report.seconds:.1f}s) -> {output.escape(args.db)}"
    )
    for failure in report.failed:
        output.line(f"  skipped {output.escape(failure.path)}: {output.escape(failure.reason)}")
    if report.seen == 0 and not report.removed:
        output.line(
            f"  no images found in {' '.join(map(output.escape, args.paths))} (PNG, JPEG, GIF, "
            "BMP, WebP or TIFF files; subfolders too unless --no-recursive; hidden ones skipped)"
        )
    captions = report.captions
    if captions is None:
        output.line("captions: off (see --captioner)")
        return 0
    usage = captions.usage
    output.line(
        f"captions by {captions.captioner}: {captions.captioned} new, "
        f"{captions.cached} cached, {len(captions.failed)} failed "
        f"({usage.calls} calls, {usage.retries} retries, {usage.total_tokens} tokens)"
    )
    output.line(
        f"  captioner from {captions.captioner_source or '?'}; caption vectors: "
        f"{captions.embed_model or 'none'} (from {captions.embed_source or '?'})"
    )
    by_reason: dict[str, list[str]] = {}
    for failure in captions.failed:  # one line per reason: a bad key is not 10k lines
        by_reason.setdefault(failure.reason, []).append(output.escape(failure.path or failure.key))
    for reason, where in by_reason.items():
        named = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
        output.line(f"  no caption for {named}: {output.escape(reason)}")
    if captions.stopped:
        output.line(
            f"captioning stopped: {output.escape(captions.stopped)}. The images are indexed; "
            "fix that and run index again to caption them."
        )
    return status


# -- search -----------------------------------------------------------------------------


#: Filter keys whose values are paths (stored absolute).
PATH_KEYS = ("file_path", "path", "folder")


def parse_filters(pairs: Sequence[str]) -> Any:
    if not pairs:
        return None
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    out: list[MetadataFilter | MetadataFilters] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--filter {pair!r} is not KEY=VALUE")
        if key in PATH_KEYS:  # relative, as `index` and --image take them; stored absolute
            out.append(MetadataFilter(key=key, value=os.path.abspath(os.path.expanduser(value))))
            continue
        parsed: Any = value
        for cast in (int, float):
            try:
                parsed = cast(value)
                break
            except ValueError:
                continue
        out.append(MetadataFilter(key=key, value=parsed))
    return MetadataFilters(filters=out)


def check_image_path(path: str) -> Path:
    """``--image PATH``: an existing regular file (a FIFO would block the read forever)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UsageError(f"--image {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"--image {path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"--image {path}: not a regular file (a folder, FIFO or device)")
    return Path(path)


def run_search(args: argparse.Namespace, branches: list[str] | None) -> int:
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if (args.query is None) == (args.image is None):
        raise UsageError("give either a text QUERY or --image PATH")
    if args.query is not None and not args.query.strip():
        raise UsageError("the text QUERY is empty; type something to search for")
    if args.mode == "image" and args.image is None:
        raise UsageError("--mode image needs --image PATH")
    if args.mode == "text" and args.query is None:
        raise UsageError("--mode text needs a text QUERY")
    if args.keep_self_hit and args.mode == "hybrid":
        raise UsageError("--keep-self-hit applies to --mode image")
    if branches is not None and args.mode not in (None, "hybrid"):
        raise UsageError("--branches applies to --mode hybrid")
    query: Any = check_image_path(args.image) if args.image else args.query
    require_index(args)
    with make_pack(args, captioner="none") as pack:
        if not pack.store.open_existing():
            raise RuntimeError(
                f"No index at {args.db} (collection {args.collection!r}); "
                f"run: clip-hybrid index PATH --db {args.db}"
            )
        result = pack.search(
            query,
            mode=args.mode or "auto",
            similarity_top_k=args.top_k,
            filters=parse_filters(args.filter),
            keep_self_hit=args.keep_self_hit or None,
            branches=branches,
        )
        dropped_paths = _dropped_paths(pack, result)
    payload = result.to_dict()
    for item in payload["filtered_self_hits"]:
        item["path"] = dropped_paths.get(item["id"])
    if args.json:
        output.print_json({"query": args.image or args.query, **payload})
        return 0
    if result.mode == "hybrid":
        from ..results import format_branches

        output.line(f"branches: {', '.join(result.branches)}")
        for name, reason in result.failed_branches.items():
            output.line(f"  branch {name} failed: {output.escape(reason)}")
        for item in payload["results"]:
            parts = format_branches(item.get("branches", {}))
            output.line(
                f"{item['rank']:>3}. rrf {item['score']:.4f}  {output.escape(item['path'])}  "
                f"({parts})"
            )
    else:
        output.line(f"mode: {result.mode} (CLIP cosine)")
        for item in payload["results"]:
            output.line(f"{item['rank']:>3}. {item['score']:.4f}  {output.escape(item['path'])}")
        for item in payload["filtered_self_hits"]:
            output.line(
                f"     filtered self-hit {item['score']:.4f} ({item['reason']}): "
                f"{output.escape(item['path'])}"
            )
    if not payload["results"]:
        output.line(result.note or "no results")
        if args.filter:  # a typo in a key matches nothing, silently
            from ..milvus.images import BUILTIN_FIELDS

            output.line(
                f"  (with --filter {' '.join(map(output.escape, args.filter))}: the stored "
                f"fields are file_path, {', '.join(BUILTIN_FIELDS[1:])}, and the metadata "
                "given at ingestion; keys and values must match exactly)"
            )
    return 0


def _dropped_paths(pack: Any, result: Any) -> dict[str, str | None]:
    ids = [d.node_id for d in (result.self_hits.dropped if result.self_hits else [])]
    if not ids:
        return {}
    rows = pack.store.get(ids, ["path"])
    return {i: rows.get(i, {}).get("path") for i in ids}


# -- serve ------------------------------------------------------------------------------


def run_serve(args: argparse.Namespace) -> int:
    from ..preview import serve

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    if args.projection == "umap" and importlib.util.find_spec("umap") is None:
        raise UsageError(
            "--projection umap needs umap-learn: pip install 'llama-index-packs-clip-hybrid[umap]'"
        )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        output.warning(
            f"serving on {args.host}: anyone who can reach it can search your index and "
            "see its images. It answers IP addresses and this machine's names; give any "
            "other name it is reached by with --allow-host."
        )
    require_index(args)
    with make_pack(args, captioner="none") as pack:
        try:
            serve(
                pack,
                host=args.host,
                port=args.port,
                projection=args.projection,
                allow_hosts=args.allow_host,
                ready=lambda url: print(f"Preview at {url} (Ctrl+C to stop)", flush=True),
            )
        except KeyboardInterrupt:
            return 0
    return 0


# -- eval -------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
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
    require_index(args)
    with make_pack(args, captioner="none") as pack:
        if not pack.store.open_existing():
            raise RuntimeError(f"No index at {args.db}; run: clip-hybrid index PATH --db {args.db}")
        report = evaluate(pack, qrels, modes)
    if args.json:
        output.print_json(report.to_dict())
        return 0
    if report.unknown_relevant:
        output.warning(report.unknown_message())
    for mode, why in report.skipped_modes.items():
        output.warning(f"mode {mode} cannot run on this index: {why}")
    output.line(f"{'mode':<8} {'n':>3} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'nDCG@10':>8}")
    for mode, s in report.modes.items():
        output.line(
            f"{mode:<8} {s.queries:>3} {s.recall_at_1:>6.3f} {s.recall_at_5:>6.3f} "
            f"{s.recall_at_10:>6.3f} {s.mrr:>6.3f} {s.ndcg_at_10:>8.3f}"
        )
        for lang, ls in report.by_language.get(mode, {}).items():
            output.line(f"  {lang:<6} {ls.queries:>3} R@5 {ls.recall_at_5:.3f} MRR {ls.mrr:.3f}")
    output.line(f"misses at 10: {len(report.misses)}")
    for miss in report.misses[:20]:
        output.line(f"  [{miss['mode']}] {output.escape(miss['query'])} (line {miss['line']})")
    return 0
