"""The shared test helpers work through the real upstream paths."""

from __future__ import annotations

import base64
import hashlib
import time

import numpy as np
import openai
import pytest
from llama_index.embeddings.clip import ClipEmbedding
from llama_index.packs.clip_hybrid.testing import (
    KINDS,
    ApiStub,
    find_cjk_font,
    make_hard_text_images,
    make_sample_images,
    make_tiny_clip_checkpoint,
)


def _cos(a, b) -> float:  # type: ignore[no-untyped-def]
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_tiny_clip_loads_through_upstream_clip_load(tiny_clip_embedding, sample_images):  # type: ignore[no-untyped-def]
    assert isinstance(tiny_clip_embedding, ClipEmbedding)
    text = tiny_clip_embedding.get_text_embedding("system architecture diagram")
    image = tiny_clip_embedding.get_image_embedding(str(sample_images[0].path))
    assert len(text) == len(image) == 32
    # An image against itself is exactly the self-hit; different images are told apart.
    again = tiny_clip_embedding.get_image_embedding(str(sample_images[0].path))
    assert _cos(image, again) == pytest.approx(1.0, abs=1e-6)
    photo = tiny_clip_embedding.get_image_embedding(str(sample_images[10].path))
    assert _cos(image, photo) < 0.95


def test_tiny_clip_is_seeded(tmp_path, tiny_clip_checkpoint, sample_images):  # type: ignore[no-untyped-def]
    same = ClipEmbedding(model_name=str(make_tiny_clip_checkpoint(tmp_path / "a.pt", seed=0)))
    other = ClipEmbedding(model_name=str(make_tiny_clip_checkpoint(tmp_path / "b.pt", seed=1)))
    reference = ClipEmbedding(model_name=str(tiny_clip_checkpoint))
    probe = str(sample_images[3].path)
    assert same.get_image_embedding(probe) == pytest.approx(reference.get_image_embedding(probe))
    assert _cos(other.get_text_embedding("a"), reference.get_text_embedding("a")) < 0.9


def test_sample_images_are_deterministic_and_cover_every_kind(tmp_path):  # type: ignore[no-untyped-def]
    first = make_sample_images(tmp_path / "one", seed=3)
    second = make_sample_images(tmp_path / "two", seed=3)
    third = make_sample_images(tmp_path / "three", seed=4)

    def digests(images):  # type: ignore[no-untyped-def]
        return [hashlib.sha256(i.path.read_bytes()).hexdigest() for i in images]

    assert digests(first) == digests(second)
    assert digests(first) != digests(third)
    assert {i.kind for i in first} >= set(KINDS)
    assert {i.lang for i in first if i.text} == {"en", "zh"}
    assert len(set(digests(first))) == len(first)  # no two images are the same bytes


def test_hard_text_images_are_deterministic_and_match_the_shipped_set(tmp_path):  # type: ignore[no-untyped-def]
    from pathlib import Path

    first = make_hard_text_images(tmp_path / "one")
    second = make_hard_text_images(tmp_path / "two")
    other = make_hard_text_images(tmp_path / "three", seed=1, langs=("en",))

    def digests(images):  # type: ignore[no-untyped-def]
        return [hashlib.sha256(i.path.read_bytes()).hexdigest() for i in images]

    assert digests(first) == digests(second)
    assert digests(other) != digests(first)[: len(other)]
    assert len(set(digests(first))) == len(first)
    assert {i.lang for i in first} == {"en", "zh"} and len({i.title for i in first}) == len(first)
    fonts = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", find_cjk_font() or "")
    if all(Path(f).is_file() for f in fonts):  # the fonts the shipped images were drawn with
        shipped = Path(__file__).resolve().parents[2] / "examples" / "images"
        for image in first:
            relative = image.path.relative_to(tmp_path / "one")
            assert (shipped / relative).read_bytes() == image.path.read_bytes(), relative


def test_openai_chat_with_image_and_embeddings(api_stub: ApiStub, sample_images):  # type: ignore[no-untyped-def]
    client = openai.OpenAI(base_url=api_stub.openai_base_url, api_key="sk-test")
    data_url = (
        "data:image/png;base64," + base64.b64encode(sample_images[0].path.read_bytes()).decode()
    )
    reply = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe the image."},
                    {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}},
                ],
            }
        ],
    )
    assert reply.choices[0].message.content.startswith("A test image")
    assert reply.usage.prompt_tokens > 0
    (request,) = api_stub.requests
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.image_urls == [data_url]

    # The client asks for base64 by default; both encodings decode to the same vector.
    as_b64 = client.embeddings.create(model="text-embedding-3-small", input=["hello"])
    as_float = client.embeddings.create(
        model="text-embedding-3-small", input=["hello"], encoding_format="float"
    )
    assert len(as_b64.data[0].embedding) == 1536
    assert as_b64.data[0].embedding == pytest.approx(as_float.data[0].embedding, abs=1e-6)


def test_openai_retry_after_then_success(api_stub: ApiStub):  # type: ignore[no-untyped-def]
    api_stub.fail_next(1, status=429, retry_after=0.3)
    client = openai.OpenAI(base_url=api_stub.openai_base_url, api_key="k", max_retries=2)
    reply = client.embeddings.create(model="text-embedding-3-small", input="x")
    assert len(reply.data) == 1
    first, second = api_stub.requests
    assert second.received_at - first.received_at >= 0.25  # the client honoured Retry-After


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"status": 500}, openai.InternalServerError),
        ({"status": 401}, openai.AuthenticationError),
        ({"malformed": True}, ValueError),
        ({"stall": 2.0}, openai.APITimeoutError),
    ],
)
def test_openai_faults(api_stub: ApiStub, fault, error):  # type: ignore[no-untyped-def]
    api_stub.fail_next(1, **fault)
    client = openai.OpenAI(
        base_url=api_stub.openai_base_url, api_key="k", max_retries=0, timeout=0.5
    )
    with pytest.raises(error):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])


def test_wrong_key_is_refused(sample_images):  # type: ignore[no-untyped-def]
    with ApiStub(expected_key="sk-right") as stub:
        bad = openai.OpenAI(base_url=stub.openai_base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.embeddings.create(model="text-embedding-3-small", input="x")
        good = openai.OpenAI(base_url=stub.openai_base_url, api_key="sk-right", max_retries=0)
        assert good.embeddings.create(model="text-embedding-3-small", input="x").data


def test_stub_records_concurrency_and_random_failures() -> None:
    import concurrent.futures

    with ApiStub(latency=0.2) as stub:
        client = openai.OpenAI(base_url=stub.openai_base_url, api_key="k", max_retries=0)
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: client.embeddings.create(model="m", input=str(i)), range(8)))
        assert stub.max_in_flight == 4
        assert time.monotonic() - start < 8 * 0.2  # served in parallel
        stub.set_failure_rate(0.5)
        outcomes = []
        for i in range(40):
            try:
                client.embeddings.create(model="m", input=str(i))
                outcomes.append(True)
            except openai.InternalServerError:
                outcomes.append(False)
        assert 5 < outcomes.count(False) < 35


def test_dashscope_openai_compatible_mode(api_stub: ApiStub):  # type: ignore[no-untyped-def]
    client = openai.OpenAI(base_url=api_stub.dashscope_compatible_base_url, api_key="sk-ds")
    reply = client.chat.completions.create(
        model="qwen-vl-max", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.model == "qwen-vl-max"
    assert api_stub.requests[0].path == "/compatible-mode/v1/chat/completions"


def test_require_skips_locally_and_fails_on_ci(monkeypatch) -> None:
    from llama_index.packs.clip_hybrid.testing import require

    require(True, "anything")  # present: nothing happens
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require(False, "a part")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="missing on CI"):
        require(False, "a part")
