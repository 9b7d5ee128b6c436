"""Hybrid retrieval: RRF fusion per image, BM25 that reads Chinese, the pack's hybrid mode."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode
from llama_index.packs.clip_hybrid import ClipHybridPack, LLMCaptioner
from llama_index.packs.clip_hybrid.hybrid.bm25 import CaptionBM25Index, CaptionText
from llama_index.packs.clip_hybrid.hybrid.fusion import RRFFusionRetriever
from llama_index.packs.clip_hybrid.hybrid.nodes import HYBRID_METADATA_KEY
from llama_index.packs.clip_hybrid.hybrid.tokens import tokenize
from llama_index.packs.clip_hybrid.testing import ApiStub, caption_table


class _Fixed:
    """A branch that returns fixed (id, score) results as image nodes."""

    def __init__(self, results: list[tuple[str, float]], *, paths: bool = True) -> None:
        self.results = results
        self.paths = paths

    def retriever(self):
        from llama_index.core.base.base_retriever import BaseRetriever

        outer = self

        class _R(BaseRetriever):
            def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
                return [
                    NodeWithScore(
                        node=ImageNode(
                            id_=node_id, image_path=f"/img/{node_id}.png" if outer.paths else None
                        ),
                        score=score,
                    )
                    for node_id, score in outer.results
                ]

        return _R()


CLIP = [("a", 0.31), ("b", 0.29), ("c", 0.25)]
BM25 = [("c", 7.0), ("d", 3.0)]
CAPTION = [("b", 0.8), ("c", 0.7), ("a", 0.1)]


def _fused(**kwargs) -> list[NodeWithScore]:
    branches = {
        "clip": _Fixed(CLIP).retriever(),
        "caption_vector": _Fixed(CAPTION).retriever(),
        "bm25": _Fixed(BM25).retriever(),
    }
    return RRFFusionRetriever(branches, similarity_top_k=10, **kwargs).retrieve("q")


def test_default_fusion_equals_upstream_rrf(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # constructs without a key
    ours = _fused()
    upstream = QueryFusionRetriever(
        [_Fixed(r).retriever() for r in (CLIP, CAPTION, BM25)],
        mode="reciprocal_rerank",
        num_queries=1,
        similarity_top_k=10,
        use_async=False,
        llm=MockLLM(),
    ).retrieve("q")
    assert [h.node.node_id for h in ours] == [h.node.node_id for h in upstream]
    assert [h.score for h in ours] == pytest.approx([h.score for h in upstream], abs=1e-12)


def test_hand_computed_rrf_table_with_k_and_weights() -> None:
    # 0-based ranks, k = 60: a = 1/60 + 1/62; b = 1/61 + 1/60; c = 1/62 + 1/61 + 1/60;
    # d = 1/61.
    expected = {
        "c": 1 / 62 + 1 / 61 + 1 / 60,
        "b": 1 / 61 + 1 / 60,
        "a": 1 / 60 + 1 / 62,
        "d": 1 / 61,
    }
    hits = _fused()
    assert [h.node.node_id for h in hits] == ["c", "b", "a", "d"]
    assert {h.node.node_id: h.score for h in hits} == pytest.approx(expected)
    c = hits[0].node.metadata[HYBRID_METADATA_KEY]
    assert c["branches"] == {
        "clip": {"rank": 3, "score": 0.25},
        "caption_vector": {"rank": 2, "score": 0.7},
        "bm25": {"rank": 1, "score": 7.0},
    }
    assert c["rrf"] == pytest.approx(expected["c"])
    # k = 1 and clip weighted 3x: a = 3/1 + 1/3 = 3.333, b = 3/2 + 1/1 = 2.5,
    # c = 3/3 + 1/2 + 1/1 = 2.5, d = 1/2.
    weighted = {h.node.node_id: h.score for h in _fused(rrf_k=1, weights={"clip": 3.0})}
    assert weighted == pytest.approx({"a": 10 / 3, "b": 2.5, "c": 2.5, "d": 0.5})


def test_images_without_paths_are_not_merged_into_one() -> None:
    """Upstream merges by node.hash, which for an ImageNode covers only image/path/url/
    text: two different images stored without a path collapse into one result."""
    left, right = _Fixed([("x", 0.9)], paths=False), _Fixed([("y", 0.8)], paths=False)
    upstream = QueryFusionRetriever(
        [left.retriever(), right.retriever()],
        num_queries=1,
        llm=MockLLM(),
        use_async=False,
        mode="reciprocal_rerank",
    ).retrieve("q")
    assert len(upstream) == 1  # the upstream trap
    ours = RRFFusionRetriever({"l": left.retriever(), "r": right.retriever()}).retrieve("q")
    assert sorted(h.node.node_id for h in ours) == ["x", "y"]


class _Meeting:
    """Branches that return only once all of them are running at the same time."""

    def __init__(self, names: list[str]) -> None:
        import threading

        self.barrier = threading.Barrier(len(names), timeout=30)
        self.threads: list[str] = []
        self.names = names

    def retriever(self, name: str, fail: bool = False):
        from llama_index.core.base.base_retriever import BaseRetriever

        meeting = self

        class _R(BaseRetriever):
            def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
                import threading

                meeting.threads.append(threading.current_thread().name)
                meeting.barrier.wait()  # BrokenBarrierError unless all branches overlap
                if fail:
                    raise RuntimeError(f"branch {name} failed")
                return [NodeWithScore(node=ImageNode(id_=name), score=1.0)]

        return _R()


def test_branches_run_at_the_same_time_on_a_kept_pool() -> None:
    meeting = _Meeting(["clip", "caption_vector", "bm25"])
    fusion = RRFFusionRetriever({n: meeting.retriever(n) for n in meeting.names})
    first = fusion.retrieve("q")
    second = fusion.retrieve("q")
    assert sorted(h.node.node_id for h in first) == sorted(meeting.names)
    assert [h.node.node_id for h in second] == [h.node.node_id for h in first]
    assert all(t.startswith("clip-hybrid-branch") for t in meeting.threads)
    assert len(set(meeting.threads)) == 3  # the same three threads served both queries


async def test_async_branches_run_at_the_same_time() -> None:
    meeting = _Meeting(["a", "b"])
    fusion = RRFFusionRetriever({n: meeting.retriever(n) for n in meeting.names})
    hits = await fusion.aretrieve("q")
    assert sorted(h.node.node_id for h in hits) == ["a", "b"]


async def test_a_failing_branch_is_named_and_the_others_answer(caplog) -> None:
    """A branch that fails (a revoked key on the caption embedder, say) does not sink the
    hybrid search: the others answer, the failure is named (key-free); only when every
    branch fails does the query fail, with the first failure."""
    meeting = _Meeting(["ok", "bad"])
    fusion = RRFFusionRetriever(
        {"ok": meeting.retriever("ok"), "bad": meeting.retriever("bad", fail=True)}
    )
    with caplog.at_level(logging.WARNING):
        hits, failed = fusion.retrieve_with_failures("q")
        plain = fusion.retrieve("q")
    assert [h.node.node_id for h in hits] == [h.node.node_id for h in plain]
    assert hits and all(
        set(h.node.metadata[HYBRID_METADATA_KEY]["branches"]) == {"ok"} for h in hits
    )
    assert list(failed) == ["bad"] and "branch bad failed" in failed["bad"]
    assert "branch bad failed" in caplog.text
    meeting = _Meeting(["ok", "bad"])
    ahits, afailed = await RRFFusionRetriever(
        {"ok": meeting.retriever("ok"), "bad": meeting.retriever("bad", fail=True)}
    ).aretrieve_with_failures("q")
    assert [h.node.node_id for h in ahits] == [h.node.node_id for h in hits] and list(afailed) == [
        "bad"
    ]
    meeting = _Meeting(["bad", "worse"])
    both = RRFFusionRetriever(
        {"bad": meeting.retriever("bad", fail=True), "worse": meeting.retriever("worse", fail=True)}
    )
    with pytest.raises(RuntimeError, match="branch bad failed"):
        both.retrieve("q")


def test_bad_fusion_options() -> None:
    with pytest.raises(ValueError, match="at least one branch"):
        RRFFusionRetriever({})
    with pytest.raises(ValueError, match="unknown branches"):
        RRFFusionRetriever({"clip": _Fixed(CLIP).retriever()}, weights={"bm25": 2.0})
    clip = {"clip": _Fixed(CLIP).retriever()}
    for k in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rrf_k"):
            RRFFusionRetriever(clip, rrf_k=k)
    for w in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="finite numbers >= 0"):
            RRFFusionRetriever(clip, weights={"clip": w})


def test_pack_weights_for_a_misspelt_branch_are_an_error(pack, image_dir) -> None:
    pack.ingest(image_dir)  # CLIP only: the caption branches cannot run
    with pytest.raises(ValueError, match=r"unknown branches: \['bm52'\]"):
        pack.hybrid_retriever(weights={"bm52": 2.0})
    assert pack.hybrid_retriever(weights={"bm25": 2.0}).branch_names == ["clip"]


@pytest.mark.parametrize("use_async", [False, True])
def test_the_top_k_are_counted_after_finish_drops_results(use_async: bool) -> None:
    # Fused order c, b, a, d (test above); finish drops c, as hydrate drops an id whose
    # image row is gone: three results still come back, in fused order.
    branches = {
        "clip": _Fixed(CLIP).retriever(),
        "caption_vector": _Fixed(CAPTION).retriever(),
        "bm25": _Fixed(BM25).retriever(),
    }
    seen: list[list[str]] = []

    def finish(hits: list[NodeWithScore]) -> list[NodeWithScore]:
        seen.append([h.node.node_id for h in hits])
        return [h for h in hits if h.node.node_id != "c"]

    fusion = RRFFusionRetriever(branches, similarity_top_k=3, finish=finish)
    if use_async:
        import asyncio

        hits = asyncio.run(fusion.aretrieve("q"))
    else:
        hits = fusion.retrieve("q")
    assert [h.node.node_id for h in hits] == ["b", "a", "d"]
    assert seen == [["c", "b", "a"], ["d"]]  # only what is still needed is read


# -- BM25 over captions ---------------------------------------------------------------

CAPTIONS = [
    CaptionText("arch", "An architecture diagram. Text: 系统架构图", "1"),
    CaptionText("login", "A flowchart. Text: 用户登录流程", "2"),
    CaptionText("sales", "A bar chart of yearly sales. Text: 年度销售报告", "3"),
    CaptionText("photo", "A photo of mountains at sunset. Text: none", "4"),
]


def test_upstream_bm25_scores_chinese_as_zero() -> None:
    from llama_index.retrievers.bm25 import BM25Retriever

    nodes = [TextNode(id_=c.image_id, text=c.text) for c in CAPTIONS]
    hits = BM25Retriever(nodes=nodes, similarity_top_k=4).retrieve("架构")
    assert all(h.score == 0.0 for h in hits)  # why bm25_tokens exists


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("架构", "arch"),
        ("系统架构图", "arch"),
        ("登录", "login"),
        ("销售报告", "sales"),
        ("diagrams", "arch"),
        ("mountain sunsets", "photo"),
        ("sales 销售", "sales"),
    ],
)
def test_bm25_chinese_english_and_mixed(query: str, expected: str) -> None:
    hits = CaptionBM25Index.build(CAPTIONS).search(query, 10)
    assert hits and hits[0][0] == expected
    assert all(score > 0 for _, score in hits)  # bm25s' zero-score padding is dropped


def test_tokenizer_segments_cjk_and_stems_english() -> None:
    assert tokenize("Diagrams of 系统架构图!") == ["diagram", "系统", "架构", "构图", "架构图"]
    assert tokenize("the and of") == []


def test_bm25_persists_settings_and_rebuilds_only_what_changed(tmp_path: Path, caplog) -> None:
    from llama_index.retrievers.bm25 import BM25Retriever

    index = CaptionBM25Index.build(CAPTIONS)
    index.persist(tmp_path / "bm25")
    # Upstream's persist drops the token pattern and stemming flag: loaded plainly, the
    # retriever would tokenize queries with "\w\w+" and stem them again.
    plain = BM25Retriever.from_persist_dir(str(tmp_path / "bm25"), show_progress=False)
    assert plain.token_pattern != r"(?u)\S+"
    loaded = CaptionBM25Index.load(tmp_path / "bm25")
    assert loaded is not None and loaded.search("架构", 3)[0][0] == "arch"
    changed = [*CAPTIONS[:3], CaptionText("photo", "A lake. Text: 湖", "5")]
    with caplog.at_level(logging.INFO, logger="llama_index.packs.clip_hybrid.hybrid.bm25"):
        rebuilt = CaptionBM25Index.build(changed, previous=loaded)
    assert "4 captions (1 segmented again)" in caplog.text
    assert rebuilt.search("湖", 3)[0][0] == "photo" and rebuilt.search("mountains", 3) == []


def _upstream_search(index: CaptionBM25Index, query: str, k: int) -> list[tuple[str, float]]:
    """What CaptionBM25Index.search did through upstream's BM25Retriever.retrieve."""
    tokens = tokenize(query)
    retriever = index._retriever
    if not tokens or retriever is None:
        return []
    retriever.similarity_top_k = min(k, len(retriever.corpus))
    hits = retriever.retrieve(QueryBundle(query_str=" ".join(tokens)))
    return [(h.node.node_id, float(h.score)) for h in hits if (h.score or 0.0) > 0.0]


def test_bm25_search_equals_upstream_retriever_built_and_loaded(tmp_path: Path) -> None:
    import random

    words = ["diagram", "sales", "gateway", "系统", "架构", "登录", "lake", "the", "报告"]
    rng = random.Random(3)
    captions = [
        CaptionText(f"img{i}", " ".join(rng.choice(words) for _ in range(rng.randrange(0, 9))), "s")
        for i in range(300)
    ]
    built = CaptionBM25Index.build(captions)
    built.persist(tmp_path / "bm25")
    loaded = CaptionBM25Index.load(tmp_path / "bm25")
    assert loaded is not None
    queries = ["diagram", "系统架构", "sales 报告 lake", "the", "unknownword", "登录 gateway"]
    compared = 0
    for index in (built, loaded):
        for query in queries:
            for k in (1, 10, 50, 1000):
                ours = index.search(query, k)
                assert ours == _upstream_search(index, query, k), (query, k)
                compared += len(ours)
    assert compared > 500
    # The corpus order is read back when it is not the captions' order.
    loaded._segmented = dict(reversed(loaded._segmented.items()))
    loaded._ids = None
    assert loaded.search("系统架构", 50) == _upstream_search(loaded, "系统架构", 50)


# -- the pack ------------------------------------------------------------------------


def test_pack_hybrid_finds_chinese_text_and_merges_branches(hybrid_pack) -> None:
    result = hybrid_pack.search("架构", mode="hybrid", similarity_top_k=5)
    hits = result.hits
    assert result.branches == ["clip", "caption_vector", "bm25"]
    ids = [h.node.node_id for h in hits]
    assert len(ids) == len(set(ids))  # one result per image, never one per branch
    top = hits[0].node
    assert top.metadata["category"] == "architecture"
    branches = top.metadata[HYBRID_METADATA_KEY]["branches"]
    assert {"clip", "bm25"} <= set(branches)
    assert -1.0 <= branches["clip"]["score"] <= 1.0  # the real cosine stays visible
    assert hits[0].score == pytest.approx(top.metadata[HYBRID_METADATA_KEY]["rrf"])
    login = hybrid_pack.retrieve("登录流程", mode="hybrid", similarity_top_k=3)
    assert login[0].node.metadata["category"] == "text_zh"


def test_pack_hybrid_image_query_filters_the_self_hit(hybrid_pack, image_dir) -> None:
    query = next(image_dir.rglob("architecture_0.png"))
    result = hybrid_pack.search(query, mode="hybrid", similarity_top_k=5)
    hits = result.hits
    assert str(query) not in [h.node.metadata["file_path"] for h in hits]
    assert result.branches == ["clip", "caption_vector", "bm25"]
    # the caption branches searched with the query image's own caption: BM25 ranks the
    # other architecture image (the same caption) first
    twin = [h for h in hits if h.node.metadata["file_path"].endswith("architecture_1.png")]
    assert twin and twin[0].node.metadata[HYBRID_METADATA_KEY]["branches"]["bm25"]["rank"] == 1


def test_pack_hybrid_without_captions_is_clip_alone(pack, image_dir) -> None:
    pack.ingest(image_dir)
    result = pack.search("a bar chart", mode="hybrid", similarity_top_k=3)
    hits = result.hits
    assert result.branches == ["clip"]
    clip = pack.retrieve("a bar chart", mode="text", similarity_top_k=3)
    assert [h.node.node_id for h in hits] == [h.node.node_id for h in clip]


def test_a_deleted_image_still_leaves_k_results(hybrid_pack) -> None:
    retriever = hybrid_pack.hybrid_retriever(similarity_top_k=3, branches=("bm25",))
    before = [h.node.node_id for h in retriever.retrieve("image")]
    assert len(before) == 3
    hybrid_pack.store.delete([before[0]])  # its caption row stays: BM25 still finds it
    after = [h.node.node_id for h in retriever.retrieve("image")]
    assert len(after) == 3 and after[:2] == before[1:]


@pytest.mark.parametrize("branch", ["bm25", "caption_vector"])
def test_a_filter_narrows_caption_branches_without_emptying_them(hybrid_pack, branch) -> None:
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    unfiltered = hybrid_pack.hybrid_retriever(
        similarity_top_k=50, candidates=50, branches=(branch,)
    ).retrieve("image")
    # A category of the lowest-ranked images, not the top one's: with one candidate the
    # branch's first caption hit fails the filter.
    top = unfiltered[0].node.metadata["category"]
    last = [h.node.metadata["category"] for h in unfiltered if h.node.metadata["category"] != top][
        -1
    ]
    only = MetadataFilters(filters=[MetadataFilter(key="category", value=last)])
    hits = hybrid_pack.hybrid_retriever(
        similarity_top_k=1, candidates=1, branches=(branch,), filters=only
    ).retrieve("image")
    assert [h.node.metadata["category"] for h in hits] == [last]
    assert set(hits[0].node.metadata[HYBRID_METADATA_KEY]["branches"]) == {branch}


def test_a_bm25_index_left_beside_a_deleted_database_does_not_answer(
    hybrid_pack, milvus_uri, fast_clip, image_dir
) -> None:
    import shutil

    assert Path(hybrid_pack.bm25_path).is_dir()
    hybrid_pack.store.close()
    shutil.rmtree(milvus_uri)  # the database, not the BM25 index beside it
    fresh = ClipHybridPack(uri=milvus_uri, embed_model=fast_clip)  # captions off
    try:
        fresh.ingest(image_dir)  # the same paths: the same image ids
        assert fresh.bm25.index() is None
        assert fresh.search("系统架构图", mode="hybrid").branches == ["clip"]
    finally:
        fresh.store.close()


def test_bm25_index_reloads_in_a_new_pack(hybrid_pack, milvus_uri, fast_clip) -> None:
    assert Path(hybrid_pack.bm25_path).is_dir()
    hybrid_pack.store.close()
    fresh = ClipHybridPack(
        uri=milvus_uri, embed_model=fast_clip, caption_embed=MockEmbedding(embed_dim=16)
    )
    try:
        result = fresh.search("系统架构图", mode="hybrid", similarity_top_k=2)
        hits = result.hits
        assert "bm25" in result.branches
        assert hits[0].node.metadata["category"] == "architecture"
    finally:
        fresh.store.close()


# -- composition with LlamaIndex ------------------------------------------------------


def test_in_a_retriever_query_engine(hybrid_pack, stub) -> None:
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.llms.openai import OpenAI

    llm = OpenAI(model="gpt-4o", api_key="sk-test", api_base=stub.openai_base_url)
    engine = RetrieverQueryEngine.from_args(
        hybrid_pack.hybrid_retriever(similarity_top_k=3), llm=llm
    )
    before = len(stub.requests)
    response = engine.query("系统架构图")
    assert str(response) == "An answer from the stub."
    top = response.source_nodes[0].node
    assert top.metadata["category"] == "architecture"
    assert HYBRID_METADATA_KEY in top.metadata
    # What the LLM read: each image's caption and where it is, not the ranks and scores
    # of the fusion or storage details (it read only "file_path: ..." when nodes had no text)
    assert top.get_content() == "An architecture diagram with an API gateway. Text: 系统架构图"
    prompt = json.dumps([r.body for r in stub.requests[before:]], ensure_ascii=False)
    assert "An architecture diagram with an API gateway" in prompt
    assert top.metadata["file_path"] in prompt
    assert '"rrf"' not in prompt and "rrf:" not in prompt and "sha256" not in prompt


def test_clip_results_carry_their_captions_too(hybrid_pack, image_dir, caption_texts) -> None:
    """Text->image and image->image results: the caption is the node's text, so a query
    engine over the plain CLIP retrievers answers from the same words."""
    by_path = {
        str(p): text
        for p in image_dir.rglob("*.png")
        for digest, text in caption_texts.items()
        if hashlib.sha256(p.read_bytes()).hexdigest() == digest
    }
    query = next(image_dir.rglob("architecture_0.png"))
    for hits in (
        hybrid_pack.retrieve("a bar chart", mode="text", similarity_top_k=4),
        hybrid_pack.retrieve(query, mode="image", similarity_top_k=4),
    ):
        assert hits
        for hit in hits:
            assert hit.node.get_content() == by_path[hit.node.metadata["file_path"]]


def test_retrievers_taken_before_an_ingest_see_what_it_added(hybrid_pack, tmp_path) -> None:
    """A hybrid retriever, and the one from get_modules(), built before an ingestion: its
    BM25 branch answers for the captions the ingestion added (it kept the index it was
    built with, so the new image was never found by BM25)."""
    own = hybrid_pack.hybrid_retriever(similarity_top_k=20)
    module = hybrid_pack.get_modules()["hybrid_retriever"]
    bm25_only = hybrid_pack.hybrid_retriever(similarity_top_k=3, branches=["bm25"])
    assert bm25_only.retrieve("unknown") == []  # no caption says it yet
    late = _unknown_image(tmp_path / "more")
    hybrid_pack.ingest(late.parent)  # the stub captions an image it does not know "Unknown."
    assert [h.node.metadata["file_path"] for h in bm25_only.retrieve("unknown")] == [str(late)]
    for retriever in (own, module):
        hits = retriever.retrieve("unknown")
        found = [h for h in hits if h.node.metadata["file_path"] == str(late)]
        assert (
            found and found[0].node.metadata[HYBRID_METADATA_KEY]["branches"]["bm25"]["rank"] == 1
        )


def test_the_hybrid_module_of_a_pack_made_before_its_first_ingest_works_after_it(
    new_hybrid_pack, image_dir
) -> None:  # type: ignore[no-untyped-def]
    """The README's pack workflow calls get_modules() right after making the pack: its
    hybrid_retriever was None for good. It says "ingest first" until there is something,
    then answers with every branch that can run."""
    from llama_index.packs.clip_hybrid.options import OptionError

    pack = new_hybrid_pack
    module = pack.get_modules()["hybrid_retriever"]
    with pytest.raises(OptionError, match="ingest first"):
        module.retrieve("系统架构图")
    pack.ingest(image_dir)
    hits = module.retrieve("系统架构图")
    own = pack.hybrid_retriever().retrieve("系统架构图")
    assert [h.node.node_id for h in hits] == [h.node.node_id for h in own] and hits
    branches = hits[0].node.metadata[HYBRID_METADATA_KEY]["branches"]
    assert {"clip", "bm25"} <= set(branches)


def test_a_retriever_sees_the_bm25_index_another_pack_persisted(
    hybrid_pack, stub, fast_clip, milvus_uri, tmp_path
) -> None:
    """Another pack object (or process) on the same index ingests and persists BM25: a
    retriever of the first pack answers from the new index on its next query."""
    bm25_only = hybrid_pack.hybrid_retriever(similarity_top_k=3, branches=["bm25"])
    assert bm25_only.retrieve("unknown") == []
    other = ClipHybridPack(
        uri=milvus_uri,
        embed_model=fast_clip,
        captioner=LLMCaptioner.openai(api_key="sk-test", api_base=stub.openai_base_url),
        caption_embed=MockEmbedding(embed_dim=16),
        show_progress=False,
    )
    late = _unknown_image(tmp_path / "more")
    other.ingest(late.parent)
    assert [h.node.metadata["file_path"] for h in bm25_only.retrieve("unknown")] == [str(late)]


def _unknown_image(folder: Path) -> Path:
    """A new image the stub VLM does not know (it captions it "Unknown.")."""
    import random

    from PIL import Image

    folder.mkdir(parents=True)
    rng = random.Random(7)
    path = folder / "late.png"
    Image.frombytes("RGB", (40, 30), bytes(rng.randrange(256) for _ in range(3600))).save(path)
    return path


def test_an_unreadable_caption_collection_never_fails_a_clip_search(hybrid_pack) -> None:
    """Captions are added to results when they can be read; a caption collection that
    went away (dropped by another process) leaves CLIP results without text, no error."""
    hybrid_pack.caption_store.client.drop_collection(hybrid_pack.caption_store.collection_name)
    hits = hybrid_pack.retrieve("a bar chart", mode="text", similarity_top_k=3)
    assert len(hits) == 3 and all(h.node.get_content() == "" for h in hits)


def test_as_a_retriever_tool_for_an_agent(hybrid_pack) -> None:
    from llama_index.core.tools import RetrieverTool

    tool = RetrieverTool.from_defaults(
        retriever=hybrid_pack.hybrid_retriever(similarity_top_k=2),
        name="find_images",
        description="Find images by what they show or the text in them (any language).",
    )
    output = tool.call("登录流程")
    assert tool.metadata.name == "find_images"
    nodes = output.raw_output
    assert nodes[0].node.metadata["category"] == "text_zh" and len(nodes) == 2


def test_an_agent_passing_an_image_path_gets_an_image_search(hybrid_pack, image_dir) -> None:
    """RetrieverTool wraps the agent's argument ("<path>\n\n"); the hybrid retriever read
    it as text, CLIP embedded the path's words, and the query image itself came back."""
    from llama_index.core.tools import RetrieverTool

    retriever = hybrid_pack.hybrid_retriever(similarity_top_k=3)
    tool = RetrieverTool.from_defaults(retriever=retriever, name="find_images")
    image = next(image_dir.rglob("architecture_0.png"))
    for called in (tool.call(str(image)), tool.call(input=str(image))):
        found = [n.node.metadata["file_path"] for n in called.raw_output]
        assert len(found) == 3 and str(image) not in found  # the self-hit is filtered
    by_image = retriever.retrieve(QueryBundle(query_str="", image_path=str(image)))
    assert found == [h.node.metadata["file_path"] for h in by_image]
    # Words that end like a file name, with no such file, stay words (every engine
    # passes bundles: "show me report.png" must not become a missing image).
    for text in ("report.png", "diagram of a cat.jpg", "\nreport.png\n\n"):
        assert len(retriever.retrieve(text)) == 3
        assert len(retriever.retrieve(QueryBundle(query_str=text))) == 3


async def test_as_a_workflow_step_with_a_vision_llm_answer(hybrid_pack, stub) -> None:
    from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock
    from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step
    from llama_index.llms.openai import OpenAI

    retriever = hybrid_pack.hybrid_retriever(similarity_top_k=2)
    llm = OpenAI(model="gpt-4o", api_key="sk-test", api_base=stub.openai_base_url)

    class AskImages(Workflow):
        @step
        async def answer(self, ev: StartEvent) -> StopEvent:
            hits = await retriever.aretrieve(ev.query)
            blocks = [TextBlock(text=ev.query)]
            blocks += [ImageBlock(path=h.node.metadata["file_path"]) for h in hits]
            reply = await llm.achat([ChatMessage(role="user", blocks=blocks)])
            return StopEvent(result=(hits, reply.message.content))

    hits, answer = await AskImages(timeout=60).run(query="架构")
    assert hits[0].node.metadata["category"] == "architecture"
    assert "系统架构图" in answer  # the stub VLM "saw" the retrieved architecture image


# -- caption-only mode (no CLIP weights) ---------------------------------------------


def test_caption_only_mode_without_clip(milvus_uri, image_dir, stub, fast_clip) -> None:
    from llama_index.packs.clip_hybrid.clip.no_clip import NoClipError
    from llama_index.packs.clip_hybrid.milvus.collection import CollectionMismatchError

    captioner = LLMCaptioner.openai(api_key="sk-test", api_base=stub.openai_base_url)
    pack = ClipHybridPack(
        uri=milvus_uri,
        clip_model="none",
        captioner=captioner,
        caption_embed=MockEmbedding(embed_dim=16),
        show_progress=False,
    )
    try:
        report = pack.ingest(image_dir)
        n = len(list(image_dir.rglob("*.png")))
        assert report.indexed == n and report.captions is not None
        assert report.captions.captioned == n
        assert pack.store.model == "none" and pack.store.dim == 2
        result = pack.search("系统架构图")  # auto: the caption branches
        hits = result.hits
        assert result.mode == "hybrid" and result.branches == ["caption_vector", "bm25"]
        assert [h.node.node_id for h in pack.run("系统架构图")] == [h.node.node_id for h in hits]
        assert hits[0].node.metadata["category"] == "architecture"
        with pytest.raises(NoClipError, match="mode='hybrid'"):
            pack.retrieve("系统架构图", mode="text")
        query = next(image_dir.rglob("architecture_0.png"))
        by_image = pack.retrieve(query, mode="hybrid", similarity_top_k=3)
        assert str(query) not in [h.node.metadata["file_path"] for h in by_image]
    finally:
        pack.store.close()
    with pytest.raises(CollectionMismatchError, match="'none'"):
        ClipHybridPack(uri=milvus_uri, embed_model=fast_clip, captioner="none").ingest(image_dir)


def test_bm25_with_captions_that_have_no_tokens() -> None:
    index = CaptionBM25Index.build(
        [
            CaptionText("a", "...", "1"),
            CaptionText("b", "a diagram", "2"),
            CaptionText("c", "😀", "3"),
        ]
    )
    assert index.search("diagram", 10) == [("b", pytest.approx(index.search("diagram", 1)[0][1]))]


def test_hybrid_keep_self_hit_reaches_every_branch(hybrid_pack, image_dir) -> None:
    query = next(image_dir.rglob("architecture_0.png"))
    hits = hybrid_pack.retrieve(query, mode="hybrid", similarity_top_k=5, keep_self_hit=True)
    mine = [h for h in hits if h.node.metadata["file_path"] == str(query)]
    assert mine  # kept, and found by every branch (the test caption vectors all tie)
    assert set(mine[0].node.metadata[HYBRID_METADATA_KEY]["branches"]) == {
        "clip",
        "caption_vector",
        "bm25",
    }


def test_changed_image_with_a_failed_caption_loses_its_old_caption(
    hybrid_pack, image_dir, stub
) -> None:
    target = next(image_dir.rglob("architecture_0.png"))
    image_id = next(
        r["id"] for r in hybrid_pack.store.iter_rows(["path"]) if r["path"] == str(target)
    )
    assert image_id in {r["id"] for r in hybrid_pack.caption_store.iter_rows(["text"])}
    target.write_bytes(
        next(image_dir.rglob("landscape_photo_0.png")).read_bytes()[:-4] + b"\0\0\0\0"
    )
    hybrid_pack.caption_transform.max_retries = 0
    stub.fail_next(10, status=500, path_prefix="/v1/chat")
    hybrid_pack.ingest(image_dir)
    assert image_id not in {r["id"] for r in hybrid_pack.caption_store.iter_rows(["text"])}
    assert all(
        h.node.node_id != image_id
        for h in hybrid_pack.retrieve("系统架构图", mode="hybrid", similarity_top_k=18)
        if "bm25" in h.node.metadata[HYBRID_METADATA_KEY]["branches"]
    )


def test_captions_off_still_drop_captions_of_deleted_images(
    hybrid_pack, milvus_uri, fast_clip, image_dir
) -> None:
    hybrid_pack.store.close()
    gone = next(image_dir.rglob("architecture_1.png"))
    gone.unlink()
    later = ClipHybridPack(
        uri=milvus_uri,
        embed_model=fast_clip,
        captioner="none",
        caption_embed=MockEmbedding(embed_dim=16),
    )
    try:
        later.ingest(image_dir, sync=True)
        assert str(gone) not in {r["path"] for r in later.caption_store.iter_rows(["path"])}
        hits = later.hybrid_retriever(similarity_top_k=18, branches=("bm25",)).retrieve(
            "系统架构图"
        )
        assert [h.node.metadata["file_path"] for h in hits] == [
            str(next(image_dir.rglob("architecture_0.png")))
        ]
    finally:
        later.store.close()


def test_captions_without_an_embedder_feed_bm25_then_get_vectors(
    milvus_uri, fast_clip, image_dir, stub
) -> None:
    captioner = LLMCaptioner.openai(api_key="sk-test", api_base=stub.openai_base_url)
    pack = ClipHybridPack(
        uri=milvus_uri,
        embed_model=fast_clip,
        captioner=captioner,
        caption_embed="none",
        show_progress=False,
    )
    try:
        pack.ingest(image_dir)
        assert pack.caption_store.model == "none"
        assert pack.search("系统架构图", mode="hybrid").branches == ["clip", "bm25"]
    finally:
        pack.store.close()
    calls = len(stub.requests)
    later = ClipHybridPack(
        uri=milvus_uri,
        embed_model=fast_clip,
        captioner=captioner,
        caption_embed=MockEmbedding(embed_dim=16),
        show_progress=False,
    )
    try:
        later.ingest(image_dir)
        assert len(stub.requests) == calls  # re-embedded from the cache: no VLM call
        assert later.caption_store.dim == 16
        result = later.search("系统架构图", mode="hybrid")
        assert result.branches == ["clip", "caption_vector", "bm25"]
    finally:
        later.store.close()


def test_upstream_bm25s_sets_its_logger_to_debug() -> None:
    """Canary for _compat/bm25s_logger.py: in a fresh process, importing bm25s leaves its
    logger at DEBUG. When this fails, upstream stopped and the workaround can go."""
    import subprocess
    import sys

    code = "import logging, bm25s; print(logging.getLogger('bm25s').level)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == str(logging.DEBUG), done.stderr


def test_upstream_fusion_hooks_we_override_are_still_there() -> None:
    """Canary for hybrid/fusion.py: RRFFusionRetriever overrides these private hooks of
    QueryFusionRetriever and calls the others. A rename upstream fails here by name, not
    somewhere inside a search."""
    import inspect

    for hook, params in {
        "_run_nested_async_queries": ["self", "queries"],
        "_run_sync_queries": ["self", "queries"],
        "_run_async_queries": ["self", "queries"],
        "_reciprocal_rerank_fusion": ["self", "results"],
        "_retrieve": ["self", "query_bundle"],
        "_aretrieve": ["self", "query_bundle"],
    }.items():
        upstream = getattr(QueryFusionRetriever, hook)
        assert list(inspect.signature(upstream).parameters) == params, hook


def test_concurrent_first_searches_build_the_bm25_index_once(hybrid_pack) -> None:
    """A server's first searches arrive together: the missing BM25 index is built by one
    of them and shared (they all persisted into one folder at once, and one failed)."""
    import threading

    def first_search(
        barrier: threading.Barrier, got: list[object], errors: list[BaseException]
    ) -> None:
        barrier.wait()
        try:
            got.append(hybrid_pack.bm25.index())
        except BaseException as exc:  # every failure is the finding
            errors.append(exc)

    for _ in range(5):
        hybrid_pack.bm25.drop()
        barrier = threading.Barrier(6)
        got: list[object] = []
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=first_search, args=(barrier, got, errors)) for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and len({id(index) for index in got}) == 1 and got[0] is not None


# -- answering questions about images (RAG over images) ---------------------------------


def _sent(stub: ApiStub, before: int) -> tuple[str, list[str], Any]:
    """The text and the images' sha256 of the one chat request since ``before``."""
    (request,) = [r for r in stub.requests[before:] if r.path.endswith("/chat/completions")]
    texts = []
    for message in request.body["messages"]:
        content = message["content"]
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        texts += [p["text"] for p in parts if p.get("type") == "text"]
    digests = [
        hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()
        for url in request.image_urls
    ]
    return "\n".join(texts), digests, request


@pytest.mark.parametrize("provider", ["gpt-4o", "qwen-vl-max"])
def test_a_vision_llm_answers_from_the_images_and_captions_found(
    hybrid_pack, stub, provider
) -> None:
    """pack.as_query_engine(): the hybrid retriever's top images go to the LLM as images,
    with their captions and the question; the stub 'VLM' answers with what it sees."""
    from llama_index.llms.openai import OpenAI

    if provider == "gpt-4o":
        llm: Any = OpenAI(model="gpt-4o", api_key="sk-test", api_base=stub.openai_base_url)
    else:  # Qwen-VL-Max through DashScope's OpenAI-compatible endpoint
        llm = LLMCaptioner.dashscope(
            api_key="sk-test", api_base=stub.dashscope_compatible_base_url
        ).llm
    engine = hybrid_pack.as_query_engine(llm=llm, similarity_top_k=2)
    before = len(stub.requests)
    question = "What does the system architecture diagram say? 系统架构图"
    response = engine.query(question)
    text, digests, request = _sent(stub, before)
    sources = response.source_nodes
    assert len(sources) == 2 and sources[0].node.metadata["category"] == "architecture"
    files = [Path(s.node.metadata["file_path"]).read_bytes() for s in sources]
    assert digests == [hashlib.sha256(f).hexdigest() for f in files]  # the images found
    assert question in text
    for source in sources:
        assert source.node.get_content() in text  # each caption, beside its image
    assert "系统架构图" in str(response)  # the stub VLM read the architecture image
    assert request.body["model"] == provider
    prefix = "/v1" if provider == "gpt-4o" else "/compatible-mode/v1"
    assert request.path == f"{prefix}/chat/completions"


async def test_a_text_llm_answers_from_captions_alone(hybrid_pack, stub) -> None:
    from llama_index.llms.openai import OpenAI

    llm = OpenAI(model="gpt-4o-mini", api_key="sk-test", api_base=stub.openai_base_url)
    engine = hybrid_pack.as_query_engine(llm=llm, images=False, similarity_top_k=3)
    before = len(stub.requests)
    response = await engine.aquery("用户登录流程")
    text, digests, _ = _sent(stub, before)
    assert digests == [] and str(response) == "An answer from the stub."
    assert response.source_nodes[0].node.metadata["category"] == "text_zh"
    assert "A sign with Chinese text. Text: 用户登录流程" in text


@pytest.mark.parametrize("use_async", [False, True])
def test_the_query_engine_searches_by_the_image_of_a_bundle(
    hybrid_pack, stub, image_dir, use_async
) -> None:
    """CustomQueryEngine handed custom_query only the bundle's text: "what is this" with
    an image_path searched for the words. The image goes to the retriever now."""
    import asyncio

    from llama_index.core.schema import QueryBundle
    from llama_index.llms.openai import OpenAI

    llm = OpenAI(model="gpt-4o", api_key="sk-test", api_base=stub.openai_base_url)
    engine = hybrid_pack.as_query_engine(llm=llm, similarity_top_k=3)
    image = next(image_dir.rglob("architecture_0.png"))
    bundle = QueryBundle(query_str="what is this", image_path=str(image))
    before = len(stub.requests)
    response = asyncio.run(engine.aquery(bundle)) if use_async else engine.query(bundle)
    question = _sent(stub, before)[0]
    by_image = hybrid_pack.hybrid_retriever(similarity_top_k=3).retrieve(bundle)
    by_text = hybrid_pack.hybrid_retriever(similarity_top_k=3).retrieve("what is this")
    ids = [s.node.node_id for s in response.source_nodes]
    assert ids == [h.node.node_id for h in by_image] != [h.node.node_id for h in by_text]
    assert "what is this" in question  # the question still reaches the LLM


def test_a_caption_vector_mismatch_names_caption_embed(milvus_uri, image_dir, stub) -> None:  # type: ignore[no-untyped-def]
    """The caption collection's model is chosen by caption_embed; the error said clip_model."""
    from llama_index.packs.clip_hybrid.milvus.collection import CollectionMismatchError

    captioner = LLMCaptioner.openai(api_key="sk-test", api_base=stub.openai_base_url)
    common = {"uri": milvus_uri, "clip_model": "none", "captioner": captioner}
    with ClipHybridPack(**common, caption_embed=MockEmbedding(embed_dim=16)) as pack:
        pack.ingest(image_dir)
        recorded = pack.caption_store.model
    with (
        ClipHybridPack(**common, caption_embed="none") as pack,
        pytest.raises(CollectionMismatchError) as mismatch,
    ):
        pack.ingest(image_dir)
    assert f"caption_embed='{recorded}'" in str(mismatch.value), str(mismatch.value)
    assert "clip_model" not in str(mismatch.value)
