"""The pack's parts inside LlamaIndex: upstream fusion, evaluators, image queries through the
hybrid retriever, and ``run`` choosing hybrid when captions can answer."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from llama_index.core.evaluation import RetrieverEvaluator
from llama_index.core.llms import MockLLM
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.schema import QueryBundle
from llama_index.packs.clip_hybrid import ClipHybridPack
from llama_index.packs.clip_hybrid.hybrid.nodes import HYBRID_METADATA_KEY
from llama_index.retrievers.selfhit import CONTENT_HASH_METADATA_KEY, to_query_bundle


def _ids_of(pack, category: str) -> list[str]:
    return [r["id"] for r in pack.store.iter_rows(["category"]) if r["category"] == category]


def test_branch_nodes_carry_their_captions_and_still_merge(hybrid_pack, caption_texts) -> None:
    """The branches from get_modules() inside LlamaIndex's own QueryFusionRetriever: every
    branch's nodes read as their caption (what an LLM or a reranker needs), and an image's
    node is the same in every branch (upstream merges by ``node.hash``; id-only nodes shared
    one hash and every image collapsed into one result)."""
    branches = hybrid_pack.get_modules()["branch_retrievers"]
    seen: dict[str, set[str]] = {}
    for name, branch in branches.items():
        hits = branch.retrieve("系统架构图")
        assert hits, name
        for hit in hits:
            digest = hit.node.metadata[CONTENT_HASH_METADATA_KEY]
            assert hit.node.get_content() == caption_texts[digest], name
            seen.setdefault(hit.node.node_id, set()).add(hit.node.hash)
    assert all(len(hashes) == 1 for hashes in seen.values())
    fusion = QueryFusionRetriever(
        list(branches.values()),
        llm=MockLLM(),
        mode="reciprocal_rerank",
        similarity_top_k=6,
        num_queries=1,
        use_async=False,
    )
    hits = fusion.retrieve("系统架构图")
    paths = [h.node.metadata.get("file_path") for h in hits]
    assert len(hits) == 6 and None not in paths and len(set(paths)) == 6, paths
    top = hits[0]
    assert top.node.metadata["category"] == "architecture"
    assert "系统架构图" in top.node.get_content()
    assert top.score == pytest.approx(3 / 60, rel=0.1)


def test_each_branch_and_the_fusion_in_upstream_retriever_evaluator(hybrid_pack) -> None:
    """LlamaIndex's RetrieverEvaluator scores the pack's retrievers by node id: the BM25
    branch and the hybrid retriever rank an architecture image first."""
    expected = _ids_of(hybrid_pack, "architecture")
    modules = hybrid_pack.get_modules()
    retrievers = {**modules["branch_retrievers"], "hybrid": modules["hybrid_retriever"]}
    scores = {}
    for name, retriever in retrievers.items():
        evaluator = RetrieverEvaluator.from_metric_names(["hit_rate", "mrr"], retriever=retriever)
        result = evaluator.evaluate("系统架构图", expected_ids=expected)
        assert set(result.retrieved_ids) <= set(
            r["id"] for r in hybrid_pack.store.iter_rows(["path"])
        )
        scores[name] = dict(result.metric_vals_dict)
    assert scores["bm25"] == {"hit_rate": 1.0, "mrr": 1.0}
    assert scores["hybrid"] == {"hit_rate": 1.0, "mrr": 1.0}


@pytest.mark.parametrize("use_async", [False, True])
def test_an_image_query_through_the_hybrid_retriever(hybrid_pack, image_dir, use_async) -> None:
    """``QueryBundle(image_path=...)`` given to a hybrid retriever built for text runs CLIP
    image->image with the query image filtered, and the caption branches with its caption:
    the same results as ``pack.search(image, mode="hybrid")``."""
    query = next(image_dir.rglob("architecture_0.png"))
    retriever = hybrid_pack.hybrid_retriever(similarity_top_k=5)
    bundle = QueryBundle(query_str="", image_path=str(query))
    hits = asyncio.run(retriever.aretrieve(bundle)) if use_async else retriever.retrieve(bundle)
    assert bundle.query_str == ""  # the caller's bundle is not changed
    paths = [h.node.metadata["file_path"] for h in hits]
    assert str(query) not in paths and len(hits) == 5
    twin = hits[paths.index(str(query.with_name("architecture_1.png")))]
    assert twin.node.metadata[HYBRID_METADATA_KEY]["branches"]["bm25"]["rank"] == 1
    expected = hybrid_pack.search(query, mode="hybrid", similarity_top_k=5).hits
    assert [h.node.node_id for h in hits] == [h.node.node_id for h in expected]


def test_run_is_hybrid_when_captions_can_answer(
    hybrid_pack, fast_clip, image_dir, tmp_path
) -> None:
    """``run``/``search`` in ``auto`` mode: a text query runs hybrid where captions exist
    (and says so), CLIP alone where they do not; an image query runs image->image."""
    result = hybrid_pack.search("登录流程")
    assert result.mode == "hybrid" and result.branches == ["clip", "caption_vector", "bm25"]
    assert result.hits[0].node.metadata["category"] == "text_zh"
    assert hybrid_pack.run("登录流程")[0].node.node_id == result.hits[0].node.node_id
    query = next(image_dir.rglob("bar_chart_0.png"))
    assert hybrid_pack.search(query).mode == "image"
    assert hybrid_pack.search(str(query)).mode == "image"

    with ClipHybridPack(uri=str(tmp_path / "plain.db"), embed_model=fast_clip) as pack:
        pack.ingest(image_dir)  # captions off: nothing but CLIP can answer
        plain = pack.search("登录流程")
    assert plain.mode == "text" and plain.branches == ["clip"]
    assert -1.0 <= plain.hits[0].score <= 1.0  # a real cosine, not an RRF score


def test_run_says_which_search_ran(hybrid_pack, caplog) -> None:
    with caplog.at_level("INFO", logger="llama_index.packs.clip_hybrid"):
        hybrid_pack.run("登录流程")
    assert "hybrid (clip, caption_vector, bm25)" in caplog.text


def test_the_caption_of_an_image_query_is_found_by_content(hybrid_pack, image_dir) -> None:
    """An image query given as bytes (no path): its caption comes from the stored copy
    with the same sha256, so the caption branches take part."""
    data = next(image_dir.rglob("text_zh_0.png")).read_bytes()
    assert hybrid_pack.captions.caption_of(data)
    retriever = hybrid_pack.get_modules()["hybrid_retriever"]
    hits = retriever.retrieve(to_query_bundle(data))
    digests = [h.node.metadata[CONTENT_HASH_METADATA_KEY] for h in hits]
    assert hashlib.sha256(data).hexdigest() not in digests  # the self-hit, by bytes
    assert any("bm25" in h.node.metadata[HYBRID_METADATA_KEY]["branches"] for h in hits)


def test_ingest_and_caption_progress_reach_llamaindex_instrumentation(
    milvus_uri, fast_clip, image_dir, stub
) -> None:
    """An event handler on LlamaIndex's root dispatcher (where observability tools attach)
    sees each stage start, progress to its total and end with its report, inside the span
    of ``ingest``."""
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
    from llama_index.packs.clip_hybrid import LLMCaptioner
    from llama_index.packs.clip_hybrid.events import (
        IngestEndEvent,
        IngestProgressEvent,
        IngestStartEvent,
    )

    seen: list = []

    class Collect(BaseEventHandler):
        def handle(self, event, **kwargs) -> None:  # type: ignore[no-untyped-def]
            if isinstance(event, (IngestStartEvent, IngestProgressEvent, IngestEndEvent)):
                seen.append(event)

    root = get_dispatcher()
    handler, spans = Collect(), SimpleSpanHandler()
    root.add_event_handler(handler)
    root.add_span_handler(spans)
    try:
        captioner = LLMCaptioner.openai(api_key="sk-test", api_base=stub.openai_base_url)
        with ClipHybridPack(
            uri=milvus_uri,
            embed_model=fast_clip,
            captioner=captioner,
            show_progress=False,
            caption_embed="none",
            batch_size=4,
        ) as pack:
            report = pack.ingest(image_dir)
    finally:
        root.event_handlers.remove(handler)
        root.span_handlers.remove(spans)
    n = report.indexed
    for stage in ("images", "captions"):
        events = [e for e in seen if e.stage == stage]
        assert isinstance(events[0], IngestStartEvent), stage
        assert isinstance(events[-1], IngestEndEvent), stage
        done = [e.done for e in events if isinstance(e, IngestProgressEvent)]
        assert done == sorted(done) and done[-1] == n, (stage, done)
    assert len(
        [e for e in seen if isinstance(e, IngestProgressEvent) and e.stage == "images"]
    ) == -(-n // 4)
    ends = {e.stage: e.report for e in seen if isinstance(e, IngestEndEvent)}
    assert ends["images"]["indexed"] == n and ends["captions"]["captioned"] == n
    assert ends["captions"]["captioner_source"] == "argument"
    ingest_spans = [s for s in spans.completed_spans if "ClipHybridPack.ingest" in s.id_]
    assert len(ingest_spans) == 1
    assert seen[0].span_id == ingest_spans[0].id_


def test_auto_is_clip_alone_once_no_caption_is_left(hybrid_pack, fast_clip, image_dir) -> None:
    """A caption collection with no rows left (its images deleted, new ones indexed with
    captions off) answers nothing: ``auto`` runs CLIP alone, with real cosines."""
    hybrid_pack.delete(image_dir)
    assert hybrid_pack.caption_store.count() == 0
    uri = hybrid_pack.store.uri
    hybrid_pack.close()
    with ClipHybridPack(uri=uri, embed_model=fast_clip, captioner="none") as pack:
        pack.ingest(next(image_dir.rglob("*.png")).parent)
        result = pack.search("a bar chart")
    assert result.mode == "text" and result.branches == ["clip"]
