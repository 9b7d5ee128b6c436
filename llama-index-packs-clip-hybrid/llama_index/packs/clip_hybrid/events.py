"""Instrumentation events of ingestion and captioning, for LlamaIndex's observability tools.

The pack dispatches them through LlamaIndex's instrumentation (``llama_index.core.
instrumentation``), inside the span of ``ClipHybridPack.ingest``: any event handler on the
root dispatcher sees them (Arize Phoenix, Langfuse and the others attach there).

Example:
    >>> from llama_index.core.instrumentation import get_dispatcher
    >>> from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    >>> class Progress(BaseEventHandler):
    ...     def handle(self, event, **kwargs):
    ...         if isinstance(event, IngestProgressEvent):
    ...             print(event.stage, event.done, event.total)
    >>> get_dispatcher().add_event_handler(Progress())  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent

#: The pack's dispatcher (a child of LlamaIndex's root dispatcher).
dispatcher = get_dispatcher("llama_index.packs.clip_hybrid")


class IngestStartEvent(BaseEvent):
    """A stage of an ingestion starts: ``images`` (CLIP vectors) or ``captions``; ``total``
    items when known."""

    stage: str
    total: int | None = None

    @classmethod
    def class_name(cls) -> str:
        return "ClipHybridIngestStartEvent"


class IngestProgressEvent(BaseEvent):
    """Items of a stage done so far (images seen, or images captioned or failed)."""

    stage: str
    done: int
    total: int | None = None

    @classmethod
    def class_name(cls) -> str:
        return "ClipHybridIngestProgressEvent"


class IngestEndEvent(BaseEvent):
    """A stage ended: its report as plain data (counts, failures, seconds)."""

    stage: str
    report: dict[str, Any]

    @classmethod
    def class_name(cls) -> str:
        return "ClipHybridIngestEndEvent"


class Progress:
    """One stage's progress: a tqdm bar when shown, and the events always."""

    def __init__(self, stage: str, *, total: int | None, bar: Any = None) -> None:
        self.stage = stage
        self.total = total
        self.done = 0
        self.bar = bar
        if bar is not None and total is not None:
            bar.total = total
        dispatcher.event(IngestStartEvent(stage=stage, total=total))

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        dispatcher.event(IngestProgressEvent(stage=self.stage, done=self.done, total=self.total))

    def end(self, report: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
        dispatcher.event(IngestEndEvent(stage=self.stage, report=report))
