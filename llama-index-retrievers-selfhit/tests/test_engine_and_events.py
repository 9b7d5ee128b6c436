"""The wrapper inside query engines, the postprocessor, the event, and configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers.no_text import NoText
from llama_index.core.schema import QueryBundle
from llama_index.retrievers.selfhit import (
    SelfHitFilteredEvent,
    SelfHitFilteringRetriever,
    SelfHitPostprocessor,
)


def _paths(nodes) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(Path(n.node.metadata["file_path"]).resolve()) for n in nodes]


def test_inside_retriever_query_engine(corpus, image_files):  # type: ignore[no-untyped-def]
    inner = corpus.build(image_files).as_retriever(image_similarity_top_k=3)
    # NoText built directly: get_response_synthesizer(response_mode="no_text", llm=...)
    # drops the llm and falls back to Settings.llm (OpenAI) upstream.
    engine = RetrieverQueryEngine(
        retriever=SelfHitFilteringRetriever(inner),
        response_synthesizer=NoText(llm=MockLLM()),
    )
    response = engine.query(QueryBundle(query_str="", image_path=str(image_files[0])))
    assert len(response.source_nodes) == 3
    assert str(image_files[0].resolve()) not in _paths(response.source_nodes)


def test_postprocessor_removes_self_hit(corpus, image_files):  # type: ignore[no-untyped-def]
    inner = corpus.build(image_files).as_retriever(image_similarity_top_k=3)
    hits = inner.image_to_image_retrieve(str(image_files[0]))
    bundle = QueryBundle(query_str="", image_path=str(image_files[0]))
    kept = SelfHitPostprocessor().postprocess_nodes(hits, query_bundle=bundle)
    assert _paths(kept) == _paths(hits)[1:]
    # Text queries are not touched.
    assert SelfHitPostprocessor().postprocess_nodes(hits, query_str="a diagram") == hits


def test_event_reports_what_was_dropped(corpus, image_files):  # type: ignore[no-untyped-def]
    seen: list[SelfHitFilteredEvent] = []

    class Collect(BaseEventHandler):
        @classmethod
        def class_name(cls) -> str:
            return "Collect"

        def handle(self, event, **kwargs) -> None:  # type: ignore[no-untyped-def]
            if isinstance(event, SelfHitFilteredEvent):
                seen.append(event)

    handler = Collect()
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        inner = corpus.build(image_files).as_retriever(image_similarity_top_k=2)
        SelfHitFilteringRetriever(inner).retrieve(image_files[3])
    finally:
        root.event_handlers.remove(handler)
    assert len(seen) == 1
    assert seen[0].query_path == str(image_files[3].resolve())
    assert [d.reason for d in seen[0].dropped] == ["path"]
    assert seen[0].returned == 2


def test_configuration_errors_name_the_fix(corpus, image_files):  # type: ignore[no-untyped-def]
    inner = corpus.build(image_files[:2]).as_retriever(image_similarity_top_k=2)
    with pytest.raises(ValueError, match="enable one of"):
        SelfHitFilteringRetriever(inner, match_id=False, match_path=False, match_bytes=False)
    with pytest.raises(ValueError, match="similarity_top_k=0"):
        SelfHitFilteringRetriever(inner, similarity_top_k=0)
    with pytest.raises(ValueError, match="near_duplicate_threshold"):
        SelfHitFilteringRetriever(inner, near_duplicate_threshold=1.5)
    with pytest.raises(TypeError, match="BaseRetriever"):
        SelfHitFilteringRetriever(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Unsupported query type"):
        SelfHitFilteringRetriever(inner).retrieve(12345)
