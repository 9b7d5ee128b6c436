"""Retrieval evaluation over a qrels file: recall@1/5/10, MRR and nDCG@10 per mode.

A qrels file is JSON Lines, one query per line::

    {"query": "系统架构图", "lang": "zh", "relevant": ["images/text_zh/text_zh_0.png"]}
    {"image": "images/flowchart/flowchart_0.png", "relevant": ["images/flowchart/flowchart_1.png"]}

Paths are relative to the qrels file's folder (or absolute). Modes: ``text`` (CLIP
text->image, text queries), ``image`` (CLIP image->image, image queries, self-hit
filtered), ``caption`` (caption vectors + BM25 fused, text queries), ``hybrid`` (all
branches fused, both kinds). MRR, recall and nDCG are LlamaIndex's retrieval metrics.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .options import CAPTION_BRANCHES, OptionError

MODES = ("text", "image", "caption", "hybrid")
CUTOFFS = (1, 5, 10)


@dataclass(frozen=True)
class Qrel:
    """One evaluation query and the images that should come back."""

    line: int
    relevant: tuple[str, ...]
    query: str | None = None
    image: str | None = None
    lang: str = ""

    @property
    def label(self) -> str:
        return self.query if self.query is not None else f"image:{self.image}"


@dataclass
class Scores:
    """Mean metrics over a group of queries."""

    queries: int = 0
    recall_at_1: float = 0.0
    recall_at_5: float = 0.0
    recall_at_10: float = 0.0
    mrr: float = 0.0
    ndcg_at_10: float = 0.0


@dataclass
class EvalReport:
    """Scores per mode, per mode and language, the queries that missed, and the relevant
    paths that are not in the index (a qrels file resolved against the wrong folder
    scores zero everywhere: this says why)."""

    modes: dict[str, Scores] = field(default_factory=dict)
    by_language: dict[str, dict[str, Scores]] = field(default_factory=dict)
    misses: list[dict[str, Any]] = field(default_factory=list)
    relevant_paths: int = 0
    unknown_relevant: list[str] = field(default_factory=list)
    #: Modes that could run no query on this index (``caption`` without captions), with why.
    skipped_modes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.unknown_relevant:
            out["warning"] = self.unknown_message()
        return out

    def unknown_message(self) -> str:
        n, total = len(self.unknown_relevant), self.relevant_paths
        return (
            f"{n} of the {total} relevant paths in the qrels file are not in the index "
            f"(e.g. {self.unknown_relevant[0]}); paths are resolved against the qrels "
            "file's folder: check them, or index those images"
        )


def load_qrels(path: str | os.PathLike[str]) -> list[Qrel]:
    """Parse a qrels JSONL file; a bad line raises ValueError naming the line and the fix."""
    base = Path(path).resolve().parent
    qrels = []
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(item, dict) or ("query" in item) == ("image" in item):
            raise ValueError(f'{path}:{number}: give exactly one of "query" or "image"')
        relevant = item.get("relevant")
        if (
            not relevant
            or not isinstance(relevant, list)
            or not all(isinstance(p, str) and p for p in relevant)
        ):
            raise ValueError(f'{path}:{number}: "relevant" must be a non-empty list of paths')
        for key in ("query", "image"):
            if key in item and not (isinstance(item[key], str) and item[key].strip()):
                raise ValueError(f'{path}:{number}: "{key}" must be a non-empty string')
        if not isinstance(item.get("lang", ""), str):
            raise ValueError(f'{path}:{number}: "lang" must be a string (en, zh, ...)')
        image = str(_resolve(base, item["image"])) if "image" in item else None
        qrels.append(
            Qrel(
                line=number,
                relevant=tuple(dict.fromkeys(str(_resolve(base, p)) for p in relevant)),
                query=item.get("query"),
                image=image,
                lang=str(item.get("lang", "")),
            )
        )
    if not qrels:
        raise ValueError(f"{path} has no queries: one JSON object per line, see the README")
    return qrels


def _resolve(base: Path, path: str) -> Path:
    candidate = Path(path)
    return (candidate if candidate.is_absolute() else base / candidate).resolve()


def evaluate(pack: Any, qrels: list[Qrel], modes: tuple[str, ...] = MODES) -> EvalReport:
    """Run every applicable (query, mode) pair against ``pack`` and score it at 10.

    ``pack`` is a :class:`ClipHybridPack` (or anything with its ``retrieve``); with a pack,
    relevant paths that are not in its index are listed in the report."""
    from llama_index.core.evaluation.retrieval.metrics import MRR, Recall

    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    per_mode: dict[str, list[dict[str, float]]] = defaultdict(list)
    per_lang: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    report = EvalReport()
    relevant = sorted({p for qrel in qrels for p in qrel.relevant})
    report.relevant_paths = len(relevant)
    store = getattr(pack, "store", None)  # a ClipHybridPack; other retrievers say nothing
    if store is not None:
        indexed = {str(Path(r["path"]).resolve()) for r in store.iter_rows(["path"]) if r["path"]}
        report.unknown_relevant = [p for p in relevant if p not in indexed]
    cannot: dict[str, str] = {}  # why a mode could not run a query
    for qrel in qrels:
        # An image query is filtered out of its own results (a self-hit, by path or by
        # bytes: copies too): it cannot be found, so it is not expected; a query left
        # with nothing expected is skipped.
        runs_images = qrel.image is not None and not set(modes).isdisjoint(("image", "hybrid"))
        dropped = self_hits(qrel) if runs_images else set()
        expected = [p for p in qrel.relevant if p not in dropped]
        if not expected:
            continue
        for mode in modes:
            try:
                retrieved = _run(pack, qrel, mode)
            except OptionError as exc:  # this query in this mode; the others still run
                cannot.setdefault(mode, str(exc))
                continue
            if retrieved is None:
                continue
            scores = {
                f"recall_at_{k}": Recall()
                .compute(expected_ids=expected, retrieved_ids=retrieved[:k] or ["-"])
                .score
                for k in CUTOFFS
            }
            scores["mrr"] = (
                MRR().compute(expected_ids=expected, retrieved_ids=retrieved or ["-"]).score
            )
            scores["ndcg_at_10"] = ndcg_at(expected, retrieved, 10)
            per_mode[mode].append(scores)
            per_lang[(mode, qrel.lang or "-")].append(scores)
            missing = [p for p in expected if p not in retrieved[:10]]
            if missing:
                report.misses.append(
                    {"mode": mode, "query": qrel.label, "line": qrel.line, "missing": missing}
                )
    report.skipped_modes = {m: why for m, why in cannot.items() if m not in per_mode}
    report.modes = {mode: _mean(rows) for mode, rows in per_mode.items()}
    for (mode, lang), rows in per_lang.items():
        report.by_language.setdefault(mode, {})[lang] = _mean(rows)
    return report


def ndcg_at(expected: list[str], retrieved: list[str], k: int) -> float:
    """nDCG@k with binary relevance, gain 1 / log2(rank + 1). The ideal ranking has
    min(#relevant, k) hits: LlamaIndex's ``NDCG`` sums the ideal over every expected id
    (llama-index-core 0.14), so with more than k relevant images a perfect top-k scored
    below 1 (0.89 for 12 relevant, top-10 all relevant)."""
    relevant = set(expected)
    dcg = sum(1.0 / math.log2(i + 1) for i, doc in enumerate(retrieved[:k], 1) if doc in relevant)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(relevant), k) + 1))
    return dcg / ideal if ideal else 0.0


def self_hits(qrel: Qrel) -> set[str]:
    """The relevant paths an image query's self-hit filter drops: the query image itself
    and files with its bytes."""
    if qrel.image is None:
        return set()
    from .images.sources import file_sha256

    def digest(path: str) -> str | None:
        try:
            return file_sha256(path)
        except OSError:
            return None

    own = digest(qrel.image)
    return {p for p in qrel.relevant if p == qrel.image or (own and digest(p) == own)}


def _run(pack: Any, qrel: Qrel, mode: str) -> list[str] | None:
    """Paths of the top 10 for one query in one mode; None when the mode does not apply."""
    is_image = qrel.image is not None
    if (mode == "text" and is_image) or (mode == "image" and not is_image):
        return None
    if mode == "caption" and is_image:
        return None
    query: Any = Path(qrel.image) if qrel.image is not None else qrel.query
    if mode == "caption":
        hits = pack.retrieve(query, mode="hybrid", similarity_top_k=10, branches=CAPTION_BRANCHES)
    else:
        hits = pack.retrieve(query, mode=mode, similarity_top_k=10)
    return [str(Path(h.node.metadata.get("file_path", "")).resolve()) for h in hits]


def _mean(rows: list[dict[str, float]]) -> Scores:
    if not rows:
        return Scores()
    n = len(rows)
    return Scores(queries=n, **{k: round(sum(r[k] for r in rows) / n, 4) for k in rows[0]})
