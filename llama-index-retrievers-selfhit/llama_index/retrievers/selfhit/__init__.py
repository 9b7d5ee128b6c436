"""Remove the query image itself from image->image retrieval results."""

from llama_index.retrievers.selfhit._identity import (
    CONTENT_HASH_METADATA_KEY,
    ImageQueryBundle,
    QueryImage,
)
from llama_index.retrievers.selfhit.events import SelfHitFilteredEvent
from llama_index.retrievers.selfhit.postprocessor import SelfHitPostprocessor
from llama_index.retrievers.selfhit.retriever import (
    SelfHitFilteringRetriever,
    SelfHitReport,
    copy_with_top_k,
    to_query_bundle,
)
from llama_index.retrievers.selfhit.rules import DroppedHit, SelfHitRules

__all__ = [
    "CONTENT_HASH_METADATA_KEY",
    "DroppedHit",
    "ImageQueryBundle",
    "QueryImage",
    "SelfHitFilteredEvent",
    "SelfHitFilteringRetriever",
    "SelfHitPostprocessor",
    "SelfHitReport",
    "SelfHitRules",
    "copy_with_top_k",
    "to_query_bundle",
]
