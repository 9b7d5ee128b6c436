"""A search's result and the one way a hit is written out (CLI, JSON, the preview page, eval)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llama_index.core.schema import NodeWithScore
from llama_index.retrievers.selfhit import SelfHitReport

from .hybrid.nodes import HYBRID_METADATA_KEY
from .options import BRANCH_BM25

#: Why a search with BM25 as its only branch came back empty (said, never left blank).
NO_CAPTION_MATCHED = (
    "no caption matched: no indexed caption has a word of the query (BM25 is the only "
    "branch here; with caption vectors or CLIP a search always returns the nearest images)"
)


@dataclass
class SearchResult:
    """What :meth:`ClipHybridPack.search` found.

    Attributes:
        hits: The results, best first, with their scores (cosine; fused RRF in hybrid).
        mode: The mode that ran (``text``, ``image`` or ``hybrid``).
        branches: The branches that ran (hybrid), in order.
        failed_branches: Branches that failed, by name, with the reason (the others
            answered).
        self_hits: What an image query dropped as the query itself (None for text).
        note: Why there are no hits, when that needs saying: a hybrid search whose only
            branch is BM25 and that found nothing says :data:`NO_CAPTION_MATCHED`.
    """

    hits: list[NodeWithScore]
    mode: str
    branches: list[str] = field(default_factory=list)
    failed_branches: dict[str, str] = field(default_factory=dict)
    self_hits: SelfHitReport | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if (
            not self.hits
            and not self.note
            and self.mode == "hybrid"
            and self.branches == [BRANCH_BM25]
            and not self.failed_branches
        ):
            self.note = NO_CAPTION_MATCHED

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): every hit as :func:`hit_to_dict` writes it."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "results": [hit_to_dict(hit, rank) for rank, hit in enumerate(self.hits, 1)],
            "filtered_self_hits": [
                {"id": d.node_id, "score": d.score, "reason": d.reason}
                for d in (self.self_hits.dropped if self.self_hits else [])
            ],
        }
        if self.mode == "hybrid":
            out["branches"] = list(self.branches)
            out["failed_branches"] = dict(self.failed_branches)
        if self.note:
            out["note"] = self.note
        return out


def hit_to_dict(hit: NodeWithScore, rank: int) -> dict[str, Any]:
    """One hit as plain data: rank, id, path, category, score; for a fused hit also its
    RRF score and its rank and score in every branch that found it."""
    metadata = hit.node.metadata
    out: dict[str, Any] = {
        "rank": rank,
        "id": hit.node.node_id,
        "path": metadata.get("file_path"),
        "category": metadata.get("category"),
        "score": hit.score,
    }
    fused = metadata.get(HYBRID_METADATA_KEY)
    if fused:
        out["rrf"] = fused.get("rrf", hit.score)
        out["branches"] = fused.get("branches", {})
    return out


def format_branches(branches: dict[str, dict[str, float]], digits: int = 4) -> str:
    """``clip #12 0.1572, bm25 #1 4.3019``: each branch's rank and score, for people."""
    return ", ".join(
        f"{name} #{info['rank']} {info['score']:.{digits}f}" for name, info in branches.items()
    )
