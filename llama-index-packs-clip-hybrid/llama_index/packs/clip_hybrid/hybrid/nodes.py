"""Image nodes: a stored row as an ``ImageNode``, id-only nodes, and filling those in later."""

from __future__ import annotations

from typing import Any

from llama_index.core.schema import ImageNode, NodeWithScore
from llama_index.retrievers.selfhit import CONTENT_HASH_METADATA_KEY

from ..milvus.captions import CaptionStore
from ..milvus.collection import StoredHit
from ..milvus.images import ImageStore
from ..redaction import package_logger, redact

logger = package_logger(__name__)

#: Node metadata key holding the per-branch ranks and scores and the fused score.
HYBRID_METADATA_KEY = "hybrid"


#: Node metadata keys that describe storage, not content: kept out of LLM and embed text.
_SYSTEM_KEYS = [CONTENT_HASH_METADATA_KEY, "folder", "width", "height", "size", "mtime"]


def hit_to_node(hit: StoredHit) -> NodeWithScore:
    """A stored row as an ``ImageNode`` with its real cosine score."""
    fields = dict(hit.fields)
    path = fields.pop("path", "") or None
    metadata: dict[str, Any] = {"file_path": path} if path else {}
    metadata[CONTENT_HASH_METADATA_KEY] = fields.pop("sha256", "")
    metadata.update(fields)
    node = ImageNode(
        id_=hit.id,
        image_path=path,
        metadata=metadata,
        excluded_llm_metadata_keys=list(_SYSTEM_KEYS),
        excluded_embed_metadata_keys=list(_SYSTEM_KEYS),
    )
    return NodeWithScore(node=node, score=hit.score)


def id_only_node(image_id: str, score: float) -> NodeWithScore:
    """A node with the image's id and a score only (a fusion reads the rows of its top-k)."""
    return NodeWithScore(node=ImageNode(id_=image_id), score=score)


def image_nodes(
    images: ImageStore, scored: list[tuple[str, float]], expr: str, read_rows: bool = False
) -> list[NodeWithScore]:
    """Image nodes for caption hits. With a filter, or ``read_rows`` (a self-hit filter
    needs each node's path and content hash), the image rows are read now; otherwise the
    nodes carry only the image id, and the fusion reads the rows of the final top-k only
    (:func:`hydrate`): one small read instead of one per branch of 50 candidates each."""
    if expr or read_rows:
        return [hit_to_node(h) for h in images.get_hits(scored, filter=expr)]
    return [id_only_node(image_id, score) for image_id, score in scored]


def hydrate(images: ImageStore, hits: list[NodeWithScore]) -> list[NodeWithScore]:
    """Replace id-only image nodes by full ones from the image collection (keeping the
    fused score and ``metadata["hybrid"]``); ids no longer stored are dropped."""
    bare = [h.node.node_id for h in hits if CONTENT_HASH_METADATA_KEY not in h.node.metadata]
    if not bare:
        return hits
    rows = {h.id: h for h in images.get_hits([(i, 0.0) for i in bare])}
    out = []
    for hit in hits:
        node_id = hit.node.node_id
        if node_id not in bare:
            out.append(hit)
        elif node_id in rows:
            full = hit_to_node(rows[node_id])
            info = hit.node.metadata.get(HYBRID_METADATA_KEY)
            if info is not None:
                full.node.metadata[HYBRID_METADATA_KEY] = info
                full.node.excluded_llm_metadata_keys.append(HYBRID_METADATA_KEY)
                full.node.excluded_embed_metadata_keys.append(HYBRID_METADATA_KEY)
            full.score = hit.score
            out.append(full)
    return out


def with_captions(captions: CaptionStore | None, hits: list[NodeWithScore]) -> list[NodeWithScore]:
    """Give result nodes their image's caption (VLM caption or OCR text) as their text:
    what a query engine's LLM reads (an image node's text was empty, so the LLM saw only
    a file path). One read of the caption collection for all ``hits``; images without a
    caption keep an empty text. The nodes must be this search's own (they are changed)."""
    if captions is None or not hits:
        return hits
    try:
        if not captions.open_if_present():
            return hits
        rows = captions.get_hits([(h.node.node_id, 0.0) for h in hits])
    except Exception as exc:  # the images answered: a caption read never fails the search
        logger.warning("Search results without captions: %s", redact(f"{exc}"))
        return hits
    texts = {row.id: row.fields.get("text") or "" for row in rows}
    for hit in hits:
        text = texts.get(hit.node.node_id)
        if text and hasattr(hit.node, "text"):
            hit.node.text = text
    return hits


def finish_fused(
    images: ImageStore, captions: CaptionStore | None, hits: list[NodeWithScore]
) -> list[NodeWithScore]:
    """A fusion's last step: full image nodes (:func:`hydrate`) with their captions."""
    return with_captions(captions, hydrate(images, hits))
