"""Caption nodes: the TextNode a caption becomes, with a stable id and a link to its image."""

from __future__ import annotations

import uuid

from llama_index.core.schema import NodeRelationship, ObjectType, RelatedNodeInfo, TextNode

from .base import Captioner
from .report import CaptionOutcome

#: Namespace of caption node ids: uuid5(namespace, "<image node id>|<captioner cache key>").
CAPTION_ID_NAMESPACE = uuid.UUID("0c3d2a8e-51b4-4f7e-9d2a-7c1e5f8b9a60")

#: Metadata keys of a caption node (kept out of the embedded and LLM-visible text).
CAPTION_METADATA_KEYS = (
    "image_id",
    "image_path",
    "image_sha256",
    "captioner",
    "caption_source",
    "caption_language",
)


def caption_node_id(image_id: str, cache_key: str) -> str:
    """The deterministic id of the caption of ``image_id`` by one captioner setting."""
    return str(uuid.uuid5(CAPTION_ID_NAMESPACE, f"{image_id}|{cache_key}"))


def make_caption_node(outcome: CaptionOutcome, captioner: Captioner) -> TextNode:
    """The caption node for one outcome: its text, its image's id (metadata and SOURCE
    relationship) and path; the metadata stay out of the embedded and LLM-visible text."""
    assert outcome.caption is not None
    image = outcome.image
    metadata = {
        "image_id": image.key,
        "image_path": image.path,
        "image_sha256": image.sha256,
        "captioner": captioner.name,
        "caption_source": captioner.source,
        "caption_language": getattr(captioner, "language", None) or "",
    }
    node = TextNode(
        id_=caption_node_id(image.key, captioner.cache_key),
        text=outcome.caption.text,
        metadata=metadata,
        excluded_embed_metadata_keys=list(CAPTION_METADATA_KEYS),
        excluded_llm_metadata_keys=list(CAPTION_METADATA_KEYS),
    )
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(
        node_id=image.key,
        node_type=ObjectType.IMAGE,
        metadata={"image_path": image.path} if image.path else {},
    )
    return node
