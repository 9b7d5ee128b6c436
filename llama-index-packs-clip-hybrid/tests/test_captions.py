"""VLMCaptionTransform with the real OpenAI client against the loopback stub."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import ImageDocument, ImageNode, NodeRelationship, TextNode
from llama_index.packs.clip_hybrid import (
    DEFAULT_CAPTION_PROMPT,
    CaptionImage,
    LLMCaptioner,
    OCRCaptioner,
    VLMCaptionTransform,
    resolve_captioner,
)
from llama_index.packs.clip_hybrid.captions.base import build_prompt
from llama_index.packs.clip_hybrid.testing import ApiStub
from PIL import Image

KEY = "sk-test-0123456789abcdef"


def _png(i: int, size: tuple[int, int] = (48, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (i % 256, (i * 7) % 256, (i * 13) % 256)).save(buf, "PNG")
    return buf.getvalue()


def _files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:03d}.png"
        path.write_bytes(_png(i))
        paths.append(path)
    return paths


def _transform(stub: ApiStub, tmp_path: Path, **kwargs) -> VLMCaptionTransform:
    captioner_options = {k: kwargs.pop(k) for k in ("detail", "language") if k in kwargs}
    captioner = LLMCaptioner.openai(api_key=KEY, api_base=stub.openai_base_url, **captioner_options)
    kwargs.setdefault("cache_path", str(tmp_path / "captions.sqlite"))
    kwargs.setdefault("backoff_base", 0.01)
    return VLMCaptionTransform(captioner, **kwargs)


def _image_bytes(url: str) -> bytes:
    assert url.startswith("data:image/")
    return base64.b64decode(url.split(",", 1)[1])


def _captions(nodes) -> list[TextNode]:
    return [n for n in nodes if isinstance(n, TextNode) and "caption_source" in n.metadata]


# -- request shape --------------------------------------------------------------------


def test_openai_request_carries_model_prompt_detail_and_the_image(tmp_path: Path) -> None:
    path = _files(tmp_path / "img", 1)[0]
    with ApiStub() as stub:
        out = _transform(stub, tmp_path, detail="low")([ImageNode(image_path=str(path))])
        (request,) = stub.requests
    assert request.path == "/v1/chat/completions"
    body = request.body
    assert body["model"] == "gpt-4o"
    (message,) = body["messages"]
    text_part, image_part = message["content"]
    assert text_part == {"type": "text", "text": DEFAULT_CAPTION_PROMPT}
    assert image_part["image_url"]["detail"] == "low"
    assert _image_bytes(image_part["image_url"]["url"]) == path.read_bytes()  # small: as is
    assert request.headers["authorization"] == f"Bearer {KEY}"
    (caption,) = _captions(out)
    assert caption.text.startswith("A test image")


@pytest.mark.parametrize(
    ("detail", "size", "expected"),
    [("low", (3000, 1500), (512, 256)), ("high", (3000, 1500), (1536, 768))],
)
def test_big_images_are_shrunk_to_what_the_model_bills(tmp_path, detail, size, expected) -> None:
    with ApiStub() as stub:
        transform = _transform(stub, tmp_path, detail=detail)
        transform.caption_images([CaptionImage.from_bytes("big", _png(1, size))])
        url = stub.requests[0].image_urls[0]
    with Image.open(io.BytesIO(_image_bytes(url))) as sent:
        assert sent.size == expected


def test_qwen_vl_through_dashscope_compatible_endpoint(tmp_path: Path) -> None:
    big = CaptionImage.from_bytes("big", _png(2, (2000, 2000)))
    with ApiStub() as stub:
        captioner = LLMCaptioner.dashscope(
            api_key=KEY, api_base=stub.dashscope_compatible_base_url, language="zh"
        )
        transform = VLMCaptionTransform(captioner, cache_path=":memory:")
        outcomes, report = transform.caption_images([big])
        (request,) = stub.requests
    assert request.path == "/compatible-mode/v1/chat/completions"
    assert request.body["model"] == "qwen-vl-max"
    prompt = request.body["messages"][0]["content"][0]["text"]
    assert prompt == build_prompt(DEFAULT_CAPTION_PROMPT, "zh")
    assert "Simplified Chinese" in prompt
    with Image.open(io.BytesIO(_image_bytes(request.image_urls[0]))) as sent:
        assert sent.size[0] * sent.size[1] <= 1280 * 28 * 28
    assert outcomes[0].caption is not None and report.captioned == 1
    assert report.captioner == "dashscope:qwen-vl-max"


# -- concurrency and failures ---------------------------------------------------------


def test_concurrency_cap_is_respected_and_reached(tmp_path: Path) -> None:
    images = [CaptionImage.from_bytes(f"k{i}", _png(i)) for i in range(18)]
    with ApiStub(latency=0.15) as stub:
        _, report = _transform(stub, tmp_path, concurrency=3).caption_images(images)
        assert stub.max_in_flight == 3
    assert report.captioned == 18 and report.usage.calls == 18


def test_429_with_retry_after_is_honoured_then_succeeds(tmp_path: Path) -> None:
    with ApiStub() as stub:
        stub.fail_next(2, status=429, retry_after=0.4)
        transform = _transform(stub, tmp_path, backoff_base=0.0)  # no backoff of our own
        outcomes, report = transform.caption_images([CaptionImage.from_bytes("a", _png(1))])
        times = [r.received_at for r in stub.requests]
    assert outcomes[0].caption is not None
    assert report.usage.calls == 3 and report.usage.retries == 2
    assert report.usage.failed_calls == 2
    assert times[1] - times[0] >= 0.4 and times[2] - times[1] >= 0.4


def test_500_storm_fails_every_image_without_losing_any_then_rerun_heals(tmp_path: Path) -> None:
    paths = _files(tmp_path / "img", 5)
    nodes = [ImageNode(image_path=str(p)) for p in paths]
    with ApiStub() as stub:
        stub.fail_next(1000, status=500)
        transform = _transform(stub, tmp_path, max_retries=2)
        out = transform(nodes)
        report = transform.last_report
        assert report is not None
        assert len(stub.requests) == 5 * 3
        assert [n for n in out if isinstance(n, ImageNode)] == nodes  # images pass through
        assert _captions(out) == []
        assert {f.key for f in report.failed} == {n.node_id for n in nodes}
        assert all("HTTP 500" in f.reason and "after 3 attempts" in f.reason for f in report.failed)
        stub.reset()
        healed = transform(nodes)
        assert len(_captions(healed)) == 5 and len(stub.requests) == 5


def test_stall_past_the_timeout_is_retried(tmp_path: Path) -> None:
    with ApiStub() as stub:
        stub.fail_next(1, stall=3.0, status=200)
        transform = _transform(stub, tmp_path, timeout=0.5)
        outcomes, report = transform.caption_images([CaptionImage.from_bytes("a", _png(1))])
    assert outcomes[0].caption is not None
    assert report.usage.retries >= 1  # a loaded machine may need a second retry


def test_timeout_without_retries_is_reported(tmp_path: Path) -> None:
    with ApiStub() as stub:
        stub.fail_next(1, stall=3.0, status=200)
        transform = _transform(stub, tmp_path, timeout=0.5, max_retries=0)
        outcomes, report = transform.caption_images([CaptionImage.from_bytes("a", _png(1))])
    assert outcomes[0].caption is None
    assert report.failed[0].reason.startswith("timed out after 0.5 s")


def test_malformed_response_is_retried(tmp_path: Path) -> None:
    with ApiStub() as stub:
        stub.fail_next(1, malformed=True)
        outcomes, report = _transform(stub, tmp_path).caption_images(
            [CaptionImage.from_bytes("a", _png(1))]
        )
    assert outcomes[0].caption is not None and report.usage.retries == 1


def test_empty_caption_is_a_failure_that_is_not_cached(tmp_path: Path) -> None:
    path = _files(tmp_path / "img", 1)[0]
    node = ImageNode(image_path=str(path))
    with ApiStub(caption=lambda request: "  ") as stub:
        transform = _transform(stub, tmp_path)
        out = transform([node])
        assert out == [node]
        report = transform.last_report
        assert (
            report is not None and report.failed[0].reason == "the model returned an empty caption"
        )
        transform([node])
        assert len(stub.requests) == 2  # asked again: empty answers are not cached


def test_bad_key_stops_the_run_and_never_reaches_logs(tmp_path: Path, caplog) -> None:
    images = [CaptionImage.from_bytes(f"k{i}", _png(i)) for i in range(30)]
    with ApiStub(expected_key="sk-the-right-one") as stub:
        transform = _transform(stub, tmp_path, concurrency=2)
        with caplog.at_level(logging.DEBUG):
            outcomes, report = transform.caption_images(images)
        assert len(stub.requests) <= 2  # the others were not attempted
    assert all(o.caption is None for o in outcomes)
    assert "HTTP 401" in report.failed[0].reason and "check the API key" in report.failed[0].reason
    assert sum(f.reason.startswith("not attempted: HTTP 401") for f in report.failed) >= 28
    assert KEY not in caplog.text and KEY not in repr(report.to_dict())


def test_random_failures_over_200_images_heal_within_two_runs(tmp_path: Path) -> None:
    paths = _files(tmp_path / "img", 200)
    nodes = [ImageNode(image_path=str(p)) for p in paths]
    seen_caption_ids: set[str] = set()
    with ApiStub(seed=7) as stub:
        stub.set_failure_rate(0.2)
        for run in range(2):
            # Run 1 gives up after 2 attempts (~8 failures of 200 at 20%); run 2 keeps
            # trying (7 attempts: all 8 fail again with probability ~1e-4).
            transform = _transform(stub, tmp_path, max_retries=1 if run == 0 else 6, concurrency=16)
            out = transform(nodes)
            assert [n for n in out if isinstance(n, ImageNode)] == nodes  # none lost
            captions = _captions(out)
            assert len({c.node_id for c in captions}) == len(captions)  # no duplicates
            seen_caption_ids |= {c.node_id for c in captions}
            report = transform.last_report
            assert report is not None
            if run == 0:
                first_failures = len(report.failed)
                assert first_failures > 0  # 20% twice in a row: ~8 of 200
                calls_before = len(stub.requests)
            else:
                assert report.failed == []
                assert report.cached == 200 - first_failures
                assert len(stub.requests) - calls_before >= first_failures
    assert len(seen_caption_ids) == 200


# -- the cache ------------------------------------------------------------------------


def test_cache_hits_misses_and_changed_pixels(tmp_path: Path) -> None:
    paths = _files(tmp_path / "img", 4)
    nodes = [ImageNode(image_path=str(p)) for p in paths]
    with ApiStub() as stub:
        first = _captions(_transform(stub, tmp_path)(nodes))
        assert len(stub.requests) == 4
        again = _transform(stub, tmp_path)  # a new process would see the same file
        second = _captions(again(nodes))
        assert len(stub.requests) == 4  # zero calls
        assert [c.node_id for c in second] == [c.node_id for c in first]
        paths[2].write_bytes(_png(99))  # new pixels at the same path
        third = _captions(again(nodes))
        assert len(stub.requests) == 5
        assert third[2].text != first[2].text and third[2].node_id == first[2].node_id
        report = again.last_report
        assert report is not None and (report.cached, report.captioned) == (3, 1)
        _transform(stub, tmp_path, language="zh")(nodes)  # another prompt: other captions
        assert len(stub.requests) == 9


def test_identical_bytes_are_captioned_once(tmp_path: Path) -> None:
    data = _png(5)
    with ApiStub() as stub:
        outcomes, _ = _transform(stub, tmp_path).caption_images(
            [CaptionImage.from_bytes("a", data), CaptionImage.from_bytes("b", data)]
        )
        assert len(stub.requests) == 1
    assert outcomes[0].caption == outcomes[1].caption


# -- as a LlamaIndex transform --------------------------------------------------------


def test_in_an_ingestion_pipeline_with_every_kind_of_image_node(tmp_path: Path) -> None:
    path = _files(tmp_path / "img", 1)[0]
    served = _files(tmp_path / "www", 2)[1]
    handler = partial(SimpleHTTPRequestHandler, directory=str(served.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{served.name}"
    text = TextNode(text="a user's own text node")
    own = ImageDocument(image_path=str(path), text="my own description")
    inline = ImageNode(image=base64.b64encode(_png(3)).decode())
    remote = ImageNode(image_url=url)
    try:
        with ApiStub() as stub:
            transform = _transform(stub, tmp_path)
            pipeline = IngestionPipeline(transformations=[transform])
            out = pipeline.run(nodes=[text, own, inline, remote])
            assert len(stub.requests) == 2
            # URLs are fetched only when allowed, and never from loopback (SSRF)
            (refused,) = transform.last_report.failed
            assert "image_url is not fetched unless allowed" in refused.reason
            allowed = _transform(stub, tmp_path, allow_image_urls=True)
            allowed([remote])
            (refused,) = allowed.last_report.failed
            assert "loopback, private or reserved" in refused.reason
            assert refused.path == url  # the failure names the URL (it named no path)
            assert len(stub.requests) == 2
    finally:
        server.shutdown()
    captions = _captions(out)
    assert len(captions) == 2 and text in out
    by_image = {c.metadata["image_id"]: c for c in captions}
    assert set(by_image) == {own.node_id, inline.node_id}
    own_caption = by_image[own.node_id]
    assert own_caption.relationships[NodeRelationship.SOURCE].node_id == own.node_id
    assert own_caption.metadata["image_path"] == str(path)
    assert own.text == "my own description"  # never overwritten unless asked
    assert "image_id" not in own_caption.get_content(metadata_mode="embed")


def test_simple_directory_reader_without_the_file_readers_is_captioned(tmp_path: Path) -> None:
    """The README's pipeline as written, with only the pack's dependencies: without
    llama-index-readers-file, SimpleDirectoryReader yields plain Documents whose text is
    the PNG's bytes (file_type image/png). They were skipped, silently: 0 captions."""
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import IngestionPipeline

    paths = _files(tmp_path / "photos", 3)
    (tmp_path / "photos" / "notes.txt").write_text("a shopping list")
    documents = SimpleDirectoryReader(str(tmp_path / "photos")).load_data()
    assert not any(isinstance(d, (ImageNode, ImageDocument)) for d in documents)  # plain
    with ApiStub() as stub:
        transform = _transform(stub, tmp_path, image_text="fill_empty")
        out = IngestionPipeline(transformations=[transform]).run(documents=documents)
    captions = _captions(out)
    assert len(captions) == 3 and transform.last_report.failed == []
    images = [n for n in out if isinstance(n, ImageDocument)]
    assert sorted(n.image_path for n in images) == sorted(str(p) for p in paths)
    assert all(n.text.startswith("A test image") for n in images)  # no PNG bytes as text
    by_id = {d.id_: d for d in documents}
    assert {c.metadata["image_id"] for c in captions} == {n.node_id for n in images}
    assert all(n.node_id in by_id for n in images)  # the reader's ids and metadata kept
    assert [n.text for n in out if n.metadata.get("file_name") == "notes.txt"] == [
        "a shopping list"
    ]


def test_documents_that_are_not_image_bytes_are_left_alone_or_named(tmp_path: Path) -> None:
    """Text an OCR reader parsed from a PNG stays text; a PNG document whose file is gone
    and an SVG are named failures; nothing raises."""
    from llama_index.core import Document

    (png,) = _files(tmp_path / "img", 1)
    parsed = Document(
        text="Invoice total 42", metadata={"file_path": str(png), "file_type": "image/png"}
    )
    gone = Document(
        text="PNG\x00\x00",
        metadata={"file_path": str(tmp_path / "gone.png"), "file_type": "image/png"},
    )
    svg_path = tmp_path / "logo.svg"
    svg_path.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    svg = Document(text="", metadata={"file_path": str(svg_path), "file_type": "image/svg+xml"})
    with ApiStub() as stub:
        transform = _transform(stub, tmp_path)
        out = transform([parsed, gone, svg])
        assert stub.requests == []
    assert out[0] is parsed and out[0].text == "Invoice total 42"
    assert _captions(out) == []
    failed = {f.path: f.reason for f in transform.last_report.failed}
    assert set(failed) == {str(tmp_path / "gone.png"), str(svg_path)}, failed


def test_image_text_fill_empty_and_replace(tmp_path: Path) -> None:
    paths = _files(tmp_path / "img", 2)
    with ApiStub() as stub:
        empty, owned = (
            ImageNode(image_path=str(paths[0])),
            ImageNode(image_path=str(paths[1]), text="mine"),
        )
        out = _transform(stub, tmp_path, image_text="fill_empty")([empty, owned])
        filled, kept = out[0], out[1]
        assert filled.text.startswith("A test image") and kept.text == "mine"
        assert filled is not empty and filled.node_id == empty.node_id
        assert empty.text == ""  # the caller's node is not changed: a new node comes back
        replaced = _transform(stub, tmp_path, image_text="replace")([owned])[0]
        assert replaced.text.startswith("A test image") and owned.text == "mine"


def test_a_broken_node_is_reported_and_the_rest_captioned(tmp_path: Path) -> None:
    path = _files(tmp_path / "img", 1)[0]
    missing = ImageNode(image_path=str(tmp_path / "gone.png"))
    not_image = ImageNode(image=base64.b64encode(b"not an image").decode())
    with ApiStub() as stub:
        transform = _transform(stub, tmp_path)
        out = transform([missing, not_image, ImageNode(image_path=str(path))])
        assert len(stub.requests) == 1
    report = transform.last_report
    assert report is not None and len(_captions(out)) == 1
    reasons = {f.key: f.reason for f in report.failed}
    assert reasons[missing.node_id].startswith("cannot read file")
    assert reasons[not_image.node_id].startswith("not a readable image")


def test_upstream_openai_llm_breaks_on_a_second_event_loop(tmp_path: Path) -> None:
    """The upstream failure behind captioners.forget_client_of_closed_loop (#20433):
    when this test fails, upstream has fixed it and the workaround can go."""
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    with ApiStub() as stub:
        llm = OpenAI(model="gpt-4o", api_key=KEY, api_base=stub.openai_base_url, max_retries=0)
        message = [ChatMessage(role="user", content="hi")]
        asyncio.run(llm.achat(message))
        with pytest.raises(Exception, match=r"Connection error|Event loop is closed"):
            asyncio.run(llm.achat(message))
        # Our transform runs each sync call on its own loop and keeps working.
        transform = _transform(stub, tmp_path, max_retries=0, cache_path=":memory:")
        for i in range(3):
            outcomes, _ = transform.caption_images([CaptionImage.from_bytes("a", _png(i))])
            assert outcomes[0].caption is not None


# -- choosing a captioner -------------------------------------------------------------


def test_auto_prefers_openai_then_dashscope_then_ocr(monkeypatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    chosen = resolve_captioner("auto")
    assert chosen is not None and chosen.name == "dashscope:qwen-vl-max"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    chosen = resolve_captioner("auto")
    assert chosen is not None and chosen.name == "openai:gpt-4o"
    assert KEY not in repr(chosen)
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    chosen = resolve_captioner("auto")
    assert isinstance(chosen, OCRCaptioner) == OCRCaptioner.available()
    with pytest.raises(ValueError, match="needs OPENAI_API_KEY"):
        resolve_captioner("openai")
    with pytest.raises(ValueError, match="not one of"):
        resolve_captioner("gpt4")


def test_any_llm_with_image_blocks_can_caption(tmp_path: Path) -> None:
    from llama_index.llms.openai_like import OpenAILike

    with ApiStub() as stub:
        llm = OpenAILike(
            model="my-vlm", api_base=stub.openai_base_url, api_key=KEY, is_chat_model=True
        )
        transform = VLMCaptionTransform(llm, cache_path=":memory:")
        outcomes, report = transform.caption_images([CaptionImage.from_bytes("a", _png(1))])
        assert stub.requests[0].body["model"] == "my-vlm"
    assert outcomes[0].caption is not None and report.captioner == "openailike:my-vlm"


def test_prompt_change_shows_in_the_pipeline_cache_key() -> None:
    a = LLMCaptioner.openai(api_key=KEY)
    b = LLMCaptioner.openai(api_key=KEY, prompt="Only the text, please.")
    assert a.cache_key != b.cache_key and repr(a) != repr(b)
    assert time.time() > 0 and KEY not in repr(a)


def test_exhausted_quota_429_stops_the_run_instead_of_retrying(tmp_path: Path) -> None:
    images = [CaptionImage.from_bytes(f"k{i}", _png(i)) for i in range(20)]
    with ApiStub() as stub:
        stub.fail_next(1000, status=429, retry_after=5.0, code="insufficient_quota")
        transform = _transform(stub, tmp_path, concurrency=2)
        started = time.perf_counter()
        outcomes, report = transform.caption_images(images)
        assert len(stub.requests) <= 2 and time.perf_counter() - started < 4.0
    assert all(o.caption is None for o in outcomes)
    assert "quota" in report.failed[0].reason and report.usage.retries == 0


def test_a_cache_home_that_cannot_be_written_keeps_captions_for_the_run(
    tmp_path: Path, monkeypatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    """A service account's read-only home: opening the default cache raised, and the
    README's pipeline lost the whole run. (A file stands where the folder must be made:
    root, which runs CI, ignores permission bits.)"""
    (tmp_path / "not_a_folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not_a_folder" / "cache"))
    path = _files(tmp_path / "img", 1)[0]
    with ApiStub() as stub, caplog.at_level(logging.WARNING):
        transform = _transform(stub, tmp_path, cache_path=None)
        out = transform([ImageDocument(image_path=str(path))])
    assert len(_captions(out)) == 1 and transform.last_report.failed == []
    assert "captions are kept for this run only" in caplog.text
