"""SelfHitPostprocessor: the self-hit rules as a node postprocessor for query engines."""

from __future__ import annotations

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.retrievers.selfhit._identity import QueryImage
from llama_index.retrievers.selfhit.rules import SelfHitRules


class SelfHitPostprocessor(BaseNodePostprocessor):
    """Drop the query image from retrieved nodes inside a query engine.

    Unlike :class:`SelfHitFilteringRetriever` it cannot ask the retriever for more, so a
    query engine with ``similarity_top_k=k`` returns k minus the self-hits; prefer the
    retriever wrapper when the count matters.

    Example:
        >>> engine = index.as_query_engine(  # doctest: +SKIP
        ...     node_postprocessors=[SelfHitPostprocessor()])
    """

    rules: SelfHitRules = Field(default_factory=SelfHitRules, description="The self-hit rules.")

    @classmethod
    def class_name(cls) -> str:
        return "SelfHitPostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            return nodes
        query = QueryImage.from_query_bundle(query_bundle)
        if query is None:
            return nodes
        kept, _dropped = self.rules.split(query, nodes)
        return kept
