"""The self-hit rules, shared by the retriever wrapper and the node postprocessor."""

from __future__ import annotations

from typing import Literal

from llama_index.core.bridge.pydantic import BaseModel, Field, field_validator
from llama_index.core.schema import NodeWithScore
from llama_index.retrievers.selfhit._identity import (
    DEFAULT_PATH_METADATA_KEYS,
    QueryImage,
    node_path,
    node_sha256,
)

SelfHitReason = Literal["id", "path", "bytes", "near_duplicate"]


class DroppedHit(BaseModel):
    """One result removed as the query image itself (or a near-duplicate of it)."""

    node_id: str
    score: float | None = None
    reason: SelfHitReason


class SelfHitRules(BaseModel):
    """Which evidence marks a result as the query image itself.

    A result is a self-hit when it is the same node (``match_id``), the same file after
    resolving the path (``match_path``: ``./a.png`` and ``/abs/a.png`` match), or the same
    bytes (``match_bytes``: sha256 taken from node metadata when ingestion stored it,
    computed otherwise). ``near_duplicate_threshold`` additionally drops results whose score
    is at or above it; it is off by default because a score is only a similarity, not an
    identity: a re-encoded JPEG of the query scores ~0.99 with CLIP, and so can a genuinely
    different image of the same scene. The score rule alone never decides equality at 1.0.
    """

    match_id: bool = Field(default=True, description="Drop the node with the query's node id.")
    match_path: bool = Field(default=True, description="Drop nodes whose file is the query file.")
    match_bytes: bool = Field(
        default=True, description="Drop nodes whose image bytes equal the query's (sha256)."
    )
    near_duplicate_threshold: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description=(
            "Also drop results scoring at or above this similarity (cosine for CLIP). "
            "None (default) keeps near-duplicates."
        ),
    )
    path_metadata_keys: tuple[str, ...] = Field(
        default=DEFAULT_PATH_METADATA_KEYS,
        description="Metadata keys that may hold a node's file path.",
    )

    @field_validator("path_metadata_keys")
    @classmethod
    def _keys_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError(
                "path_metadata_keys is empty; pass at least one key, e.g. 'file_path'."
            )
        return value

    @property
    def any_enabled(self) -> bool:
        return (
            self.match_id
            or self.match_path
            or self.match_bytes
            or self.near_duplicate_threshold is not None
        )

    def reason(self, query: QueryImage, hit: NodeWithScore) -> SelfHitReason | None:
        """Why ``hit`` is the query image, or None when it is another image."""
        node = hit.node
        if self.match_id and query.node_id is not None and node.node_id == query.node_id:
            return "id"
        if (
            self.match_path
            and query.path is not None
            and node_path(node, self.path_metadata_keys) == query.path
        ):
            return "path"
        if (
            self.match_bytes
            and query.sha256 is not None
            and node_sha256(node, self.path_metadata_keys) == query.sha256
        ):
            return "bytes"
        if (
            self.near_duplicate_threshold is not None
            and hit.score is not None
            and hit.score >= self.near_duplicate_threshold
        ):
            return "near_duplicate"
        return None

    def split(
        self, query: QueryImage, hits: list[NodeWithScore]
    ) -> tuple[list[NodeWithScore], list[DroppedHit]]:
        """Partition ``hits`` into kept results and dropped self-hits, order preserved."""
        kept: list[NodeWithScore] = []
        dropped: list[DroppedHit] = []
        for hit in hits:
            why = self.reason(query, hit)
            if why is None:
                kept.append(hit)
            else:
                dropped.append(DroppedHit(node_id=hit.node.node_id, score=hit.score, reason=why))
        return kept, dropped
