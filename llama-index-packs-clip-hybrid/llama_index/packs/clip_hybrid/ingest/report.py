"""What an ingestion run did: counts, failures with their reasons, and the time it took."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class IngestFailure:
    path: str
    reason: str


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
