"""Words that OCR glued together ("Quarterlyrevenue2023") are found by BM25, both backends.

The words, titles and layouts here are not those of the evaluation set
(testing/hard_text.py, examples/qrels.jsonl): the splitting must be general.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from llama_index.packs.clip_hybrid import ClipHybridPack, OCRCaptioner
from llama_index.packs.clip_hybrid.hybrid.tokens import tokenize
from llama_index.packs.clip_hybrid.testing import draw_hard_text, find_cjk_font, require
from llama_index.packs.clip_hybrid.words import glued_parts, split_glued


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("Totalshipments2019", ["total", "shipments", "2019"]),
        ("nextmaintenancewindow", ["next", "maintenance", "window"]),
        ("CustomerSatisfactionScore", ["customer", "satisfaction", "score"]),
        ("Departuretime07", ["departure", "time", "07"]),
        ("freeshippingonallorders", ["free", "shipping", "on", "all", "orders"]),
        ("wifipassword", ["wifi", "password"]),
    ],
)
def test_glued_tokens_split_into_their_words(token: str, words: list[str]) -> None:
    assert glued_parts(token) == words


@pytest.mark.parametrize(
    "word",
    [
        "information",
        "together",
        "dashboard",
        "therapist",
        "Hamburg",
        "nowhere",
        "é",
        "2023",
        # accented Latin is one run (it was cut at every accent: "Zürich" -> z ü rich,
        # and "rich" then matched "Zürich"); other scripts stay whole
        "Zürich",
        "résumé",
        "Straße",
        "Überblick",
        "décembre",
        "Москва",
    ],
)
def test_a_word_stays_whole(word: str) -> None:  # accented and other-script words too
    assert glued_parts(word) == []


def test_split_glued_keeps_the_token_and_leaves_other_scripts() -> None:
    assert split_glued("Totalshipments2019 up, 系统架构图") == (
        "Totalshipments2019 total shipments 2019 up, 系统架构图"
    )
    # mixed scripts in one \w run: the Chinese run stays one piece for jieba
    assert split_glued("用户Dashboardoverview") == "用户Dashboardoverview 用户 dashboard overview"


def test_accented_and_wide_digits_split_only_at_script_changes() -> None:
    assert glued_parts("Café2023") == ["café", "2023"]
    assert glued_parts("Köln2023") == ["köln", "2023"]
    assert glued_parts("２０２３年") == ["２０２３", "年"]  # full-width digits are kept


def test_milvus_bm25_reads_the_whole_caption_then_the_split_words() -> None:
    """The split words come after the whole caption, and only they are cut to fit the
    field: a long caption's last words stay searchable (cutting the split text dropped them)."""
    from llama_index.packs.clip_hybrid.milvus.captions import MAX_CAPTION_BYTES, bm25_input

    caption = "Quarterlyrevenue2023 " * 2800 + "zebra crossing"
    assert len(caption.encode()) <= MAX_CAPTION_BYTES
    text = bm25_input(caption)
    assert text.startswith(caption) and len(text.encode()) <= MAX_CAPTION_BYTES
    assert "quarterly revenue 2023" in text[len(caption) :]
    assert bm25_input("plain words") == "plain words"


def test_a_query_shares_every_token_with_the_glued_text() -> None:
    for text, query in [
        ("Text: Nextmaintenancewindow07:15", "next maintenance window 07:15"),
        ("Text: 访客登记Visitorbadgepickup", "visitor badge pickup 访客登记"),
    ]:
        assert set(tokenize(query)) <= set(tokenize(text)), (query, tokenize(text))


#: Titles drawn bold and tight (OCR glues their words) that no tuning saw: (title, query).
TITLES = [
    ("Vendor contract renewal 2031", "vendor contract renewal"),
    ("Printer toner replacement", "printer toner replacement"),
    ("Visitor badge pickup 08:15", "visitor badge pickup"),
    ("Garden irrigation schedule", "irrigation schedule"),
]


@pytest.fixture(scope="module")
def glued_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("glued")
    for i, (title, _) in enumerate(TITLES):
        img = draw_hard_text(
            title, "Ask at the front desk", lang="en", style="bold_tight", rng=random.Random(i)
        )
        img.save(folder / f"slide_{i}.png")
    if find_cjk_font() is not None:
        img = draw_hard_text(
            "访客登记Visitor log", "前台办理", lang="zh", style="mixed_small", rng=random.Random(9)
        )
        img.save(folder / "slide_zh.png")
    return folder


@pytest.mark.parametrize("backend", ["bm25s", "milvus"])
def test_bm25_finds_titles_that_ocr_read_glued(backend: str, glued_folder: Path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    require(OCRCaptioner.available(), "rapidocr-onnxruntime (the ocr extra)")
    pack = ClipHybridPack(
        uri=str(tmp_path / "glued.db"),
        clip_model="none",
        captioner="ocr",
        caption_embed="none",
        bm25=backend,
        caption_cache_path=str(tmp_path / "captions.sqlite"),
        show_progress=False,
    )
    with pack:
        pack.ingest(glued_folder)
        glued = 0
        queries = [(q, f"slide_{i}.png") for i, (_, q) in enumerate(TITLES)]
        if (glued_folder / "slide_zh.png").exists():
            queries.append(("visitor log 访客登记", "slide_zh.png"))
        for query, expected in queries:
            result = pack.search(query)
            assert result.branches == ["bm25"]
            assert result.hits, (query, result.note)
            top = result.hits[0].node
            assert Path(top.metadata["file_path"]).name == expected, (query, top.text)
            # The caption stays what OCR read; the split words are BM25's alone.
            assert top.text.startswith("Text: ")
            title = top.text.splitlines()[0].removeprefix("Text: ")
            glued += " " not in title.strip()
        assert glued >= 2  # OCR did glue the words: the case this test is about


def test_a_milvus_bm25_collection_made_before_the_split_keeps_working(milvus_uri, caplog) -> None:  # type: ignore[no-untyped-def]
    """The layout of caption collections made by 0.x before ``bm25_text`` existed: the
    BM25 function reads ``text``. It is searched as before, nothing is rewritten."""
    from llama_index.packs.clip_hybrid import ImageStore
    from llama_index.packs.clip_hybrid.milvus.captions import BM25_INPUT_FIELD, CaptionStore
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    caplog.set_level("INFO", logger="llama_index.packs.clip_hybrid")
    images = ImageStore(uri=milvus_uri)
    try:
        images.ensure(dim=4)
        client = images.database.client
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
        schema.add_field(
            "text",
            DataType.VARCHAR,
            max_length=65535,
            enable_analyzer=True,
            analyzer_params={"tokenizer": "jieba", "filter": ["lowercase"]},
        )
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        for name in ("sha256", "cache_key", "captioner", "path"):
            schema.add_field(name, DataType.VARCHAR, max_length=256)
        schema.add_function(
            Function(
                name="caption_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="COSINE")
        index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        client.create_collection("captions", schema=schema, index_params=index)
        captions = CaptionStore(images, bm25="milvus")
        captions.ensure(dim=4, model="m")  # opens it: no error, no rebuild
        assert not captions.splits_glued_words()
        texts = {"a": "Text: Quarterlyrevenue2023", "b": "Text: quarterly revenue 2023"}
        captions.upsert(
            [
                {"id": i, "vector": [1.0, 0, 0, 0], "text": t, "sha256": i, "cache_key": "k"}
                | {"captioner": "c", "path": f"/x/{i}.png"}
                for i, t in texts.items()
            ]
        )
        captions.flush()
        rows = {r["id"]: r for r in captions.iter_rows(["text"])}
        assert {i: r["text"] for i, r in rows.items()} == texts
        got = client.query("captions", filter='id == "a"', output_fields=["*"])[0]
        assert BM25_INPUT_FIELD not in got  # nothing new written into an old collection
        assert [i for i, _ in captions.search_bm25("quarterly revenue", limit=5)] == ["b"]
        for _ in range(3):  # as captioning does, batch after batch: said once, not each time
            captions.ensure(dim=4, model="m")
            captions.splits_glued_words()
        assert caplog.text.count("made by an older version") == 1
    finally:
        images.close()


def test_bm25_alone_says_no_caption_matched_and_other_branches_fill_k(
    glued_folder: Path, tmp_path, capsys
) -> None:  # type: ignore[no-untyped-def]
    import json

    from llama_index.core.embeddings import MockEmbedding
    from llama_index.packs.clip_hybrid.cli.main import main

    require(OCRCaptioner.available(), "rapidocr-onnxruntime (the ocr extra)")
    db = str(tmp_path / "empty.db")
    cache = str(tmp_path / "captions.sqlite")
    options = dict(clip_model="none", captioner="ocr", caption_cache_path=cache)
    with ClipHybridPack(uri=db, caption_embed="none", show_progress=False, **options) as pack:
        pack.ingest(glued_folder)
        result = pack.search("zebra crossing")
        assert result.hits == [] and result.branches == ["bm25"]
        assert result.note.startswith("no caption matched")
        assert result.to_dict()["note"] == result.note
        from llama_index.packs.clip_hybrid.preview import PreviewApp

        page = PreviewApp(pack).search({"mode": "hybrid", "query": "zebra crossing"})
        assert page["results"] == [] and page["note"] == result.note  # the page says it too
    for args in (["--json"], []):
        capsys.readouterr()
        code = main(["search", "zebra crossing", "--db", db, *args])
        out = capsys.readouterr().out
        assert code == 0
        if args:
            payload = json.loads(out)
            assert payload["results"] == [] and payload["note"].startswith("no caption matched")
        else:
            assert "no caption matched" in out
    # With another branch the same query still returns k images.
    with ClipHybridPack(
        uri=str(tmp_path / "both.db"),
        caption_embed=MockEmbedding(embed_dim=8),
        show_progress=False,
        **options,
    ) as pack:
        pack.ingest(glued_folder)
        result = pack.search("zebra crossing", similarity_top_k=3)
        assert result.branches == ["caption_vector", "bm25"]
        assert len(result.hits) == 3 and result.note == ""


def test_the_caption_embedder_reads_glued_words_split(  # type: ignore[no-untyped-def]
    milvus_uri, fast_clip, image_dir, monkeypatch
) -> None:
    """Caption vectors are made from the caption with its glued words split (an embedder
    reads "Quarterlyrevenue2023" as noise), while the stored caption stays as OCR read it."""
    from llama_index.packs.clip_hybrid import LLMCaptioner
    from llama_index.packs.clip_hybrid.testing import ApiStub

    glued = "Quarterlyrevenue2023 Launchwindow09:30"
    with ApiStub(caption=lambda request: glued) as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.openai_base_url)
        captioner = LLMCaptioner.openai(api_key="sk-test", api_base=stub.openai_base_url)
        with ClipHybridPack(
            uri=milvus_uri,
            embed_model=fast_clip,
            captioner=captioner,
            caption_embed="openai",
            show_progress=False,
        ) as pack:
            pack.ingest(next(image_dir.rglob("*.png")))
            stored = [r["text"] for r in pack.caption_store.iter_rows(["text"])]
    embedded = str([r.body["input"] for r in stub.requests if r.path.endswith("/embeddings")])
    assert stored == [glued]
    assert "quarterly revenue 2023" in embedded and "launch window 09" in embedded
