"""Instrumentation event emitted when self-hits are removed from results."""

from __future__ import annotations

from llama_index.core.instrumentation.events import BaseEvent
from llama_index.retrievers.selfhit.rules import DroppedHit


class SelfHitFilteredEvent(BaseEvent):
    """Fired once per image query with what was removed (possibly nothing).

    A UI can subscribe with an event handler and show "self-hit 1.0 filtered".
    """

    query_path: str | None = None
    query_node_id: str | None = None
    dropped: list[DroppedHit]
    returned: int

    @classmethod
    def class_name(cls) -> str:
        return "SelfHitFilteredEvent"
