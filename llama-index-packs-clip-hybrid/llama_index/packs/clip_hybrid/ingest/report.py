"""What an ingestion run did: counts, failures with their reasons, and the time it took."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class IngestFailure:
    path: str
    reason: str

    @classmethod
    def not_an_image(cls, item: Any) -> IngestFailure:
        """An input that is not an image, named by its file or node id (never its repr,
        which for a node is its whole text)."""
        kind = type(item).__name__
        node_id = getattr(item, "node_id", None)
        if isinstance(node_id, str):
            metadata = getattr(item, "metadata", None) or {}
            where = str(metadata.get("file_path") or f"node {node_id}")
            return cls(where, f"a {kind} is not an image: give ImageNode or ImageDocument nodes")
        return cls(repr(item)[:80], f"unsupported input {kind}: give image paths or folders")


@dataclass
class IngestReport:
    """What one ingestion run did. ``failed`` items are retried by the next run."""

    indexed: int = 0
    unchanged: int = 0
    reused: int = 0
    #: Rows whose stored vector was damaged (changed on disk) and is embedded again.
    repaired: int = 0
    removed: int = 0
    seen: int = 0
    forward_passes: int = 0
    failed: list[IngestFailure] = field(default_factory=list)
    seconds: float = 0.0
    #: The captioning stage's report, set by :class:`ClipHybridPack` (a
    #: ``CaptionReport``; None when captions are off).
    captions: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), as ``clip-hybrid index --json`` prints it."""
        return {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "reused": self.reused,
            "repaired": self.repaired,
            "removed": self.removed,
            "seen": self.seen,
            "forward_passes": self.forward_passes,
            "seconds": round(self.seconds, 3),
            "failures": [asdict(f) for f in self.failed],
            "captions": self.captions.to_dict() if self.captions is not None else None,
        }
