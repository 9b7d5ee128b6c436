"""What a captioning run did: per-image outcomes, failures, usage and the run's report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .base import Caption, CaptionImage


@dataclass(frozen=True)
class CaptionFailure:
    """An image that got no caption this run, and why (it is retried next run)."""

    key: str
    path: str
    reason: str


@dataclass
class CaptionUsage:
    """What the run cost: API calls (retries included), failed calls, tokens reported."""

    calls: int = 0
    retries: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, caption: Caption) -> None:
        self.prompt_tokens += caption.prompt_tokens or 0
        self.completion_tokens += caption.completion_tokens or 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}


@dataclass
class CaptionReport:
    """What one captioning run did. ``failed`` items are asked again by the next run."""

    captioner: str = ""
    #: Where the captioner came from: argument, Settings.llm, OPENAI_API_KEY, ...
    captioner_source: str = ""
    #: The caption embedder (``none``: captions for BM25 only) and where it came from.
    embed_model: str = ""
    embed_source: str = ""
    captioned: int = 0
    cached: int = 0
    empty: int = 0
    failed: list[CaptionFailure] = field(default_factory=list)
    usage: CaptionUsage = field(default_factory=CaptionUsage)
    seconds: float = 0.0
    #: Why captioning stopped early, when an error meant no other image could succeed (a
    #: bad key, an unknown model): the images after it were not asked. Empty otherwise.
    stopped: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), as ``clip-hybrid index --json`` prints it."""
        return {
            "captioner": self.captioner,
            "captioner_source": self.captioner_source,
            "embed_model": self.embed_model,
            "embed_source": self.embed_source,
            "captioned": self.captioned,
            "cached": self.cached,
            "empty": self.empty,
            "failed": len(self.failed),
            "failures": [{"path": f.path, "id": f.key, "reason": f.reason} for f in self.failed],
            "usage": self.usage.to_dict(),
            "seconds": round(self.seconds, 3),
            "stopped": self.stopped,
        }


@dataclass(frozen=True)
class CaptionOutcome:
    """The result for one image: a caption (possibly from the cache) or a failure."""

    image: CaptionImage
    caption: Caption | None = None
    cached: bool = False
    failure: str | None = None
