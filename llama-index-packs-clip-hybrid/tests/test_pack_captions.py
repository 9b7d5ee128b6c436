"""The pack's captioning stage: caption vectors in their own Milvus collection."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core.embeddings import MockEmbedding
from llama_index.packs.clip_hybrid import ClipHybridPack, FastClipEmbedding, LLMCaptioner
from llama_index.packs.clip_hybrid.captions.embedding import local_embedding_available
from llama_index.packs.clip_hybrid.testing import ApiStub, caption_table, require

KEY = "sk-test-pack-000000"


def _pack(uri: str, clip: FastClipEmbedding, **kwargs) -> ClipHybridPack:
    return ClipHybridPack(uri=uri, embed_model=clip, show_progress=False, **kwargs)


def _rows(pack: ClipHybridPack) -> dict[str, dict]:
    return {r["id"]: r for r in pack.caption_store.iter_rows(["text", "sha256", "path"])}


def test_openai_captions_and_1536_dim_vectors(
    milvus_uri, fast_clip, image_dir, monkeypatch
) -> None:
    with ApiStub() as stub:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", stub.openai_base_url)
        pack = _pack(milvus_uri, fast_clip, captioner="auto", caption_embed="auto")
        try:
            report = pack.ingest(image_dir)
            captions = report.captions
            assert captions is not None and captions.captioner == "openai:gpt-4o"
            n = pack.store.count()
            assert captions.captioned == n and captions.failed == []
            assert pack.caption_store.dim == 1536 and pack.caption_store.count() == n
            assert pack.caption_store.model == "text-embedding-3-small"
            embed_calls = [r for r in stub.requests if r.path.endswith("/embeddings")]
            assert embed_calls[0].body["model"] == "text-embedding-3-small"
            image_ids = {r["id"] for r in pack.store.iter_rows(["path"])}
            rows = _rows(pack)
            assert set(rows) == image_ids  # each caption row is keyed by its image's id
            before = len(stub.requests)
            again = pack.ingest(image_dir)
            assert len(stub.requests) == before  # unchanged: no caption, no embedding call
            assert again.captions is not None and again.captions.usage.calls == 0
        finally:
            pack.store.close()
    assert KEY not in repr(report.to_dict())


def test_dimension_comes_from_the_embed_model(milvus_uri, fast_clip, image_dir) -> None:
    with ApiStub() as stub:
        captioner = LLMCaptioner.openai(api_key=KEY, api_base=stub.openai_base_url)
        pack = _pack(
            milvus_uri, fast_clip, captioner=captioner, caption_embed=MockEmbedding(embed_dim=48)
        )
        try:
            pack.ingest(image_dir)
            assert pack.caption_store.dim == 48
        finally:
            pack.store.close()


def test_offline_local_embedder_makes_384_dim_vectors(milvus_uri, fast_clip, image_dir) -> None:
    require(local_embedding_available(), "the local extra (all-MiniLM-L6-v2)")
    with ApiStub() as stub:
        captioner = LLMCaptioner.openai(api_key=KEY, api_base=stub.openai_base_url)
        pack = _pack(milvus_uri, fast_clip, captioner=captioner, caption_embed="local")
        try:
            pack.ingest(image_dir)
            assert pack.caption_store.dim == 384
            assert pack.caption_store.model == "sentence-transformers/all-MiniLM-L6-v2"
        finally:
            pack.store.close()


def test_failed_captions_keep_images_and_only_they_are_retried(
    milvus_uri, fast_clip, image_dir
) -> None:
    with ApiStub() as stub:
        captioner = LLMCaptioner.openai(api_key=KEY, api_base=stub.openai_base_url)
        pack = _pack(
            milvus_uri, fast_clip, captioner=captioner, caption_embed=MockEmbedding(embed_dim=8)
        )
        pack.caption_transform.max_retries = 0
        try:
            stub.fail_next(3, status=503, path_prefix="/v1/chat")
            first = pack.ingest(image_dir)
            n = pack.store.count()
            assert first.indexed == n and first.failed == []  # every image is searchable
            assert first.captions is not None and len(first.captions.failed) == 3
            assert pack.caption_store.count() == n - 3
            stub.reset()
            second = pack.ingest(image_dir)
            assert second.captions is not None
            assert second.captions.usage.calls == 3 and second.captions.cached == 0
            assert pack.caption_store.count() == n
        finally:
            pack.store.close()


def test_changed_and_deleted_images_update_their_captions(
    milvus_uri, fast_clip, image_dir: Path
) -> None:
    with ApiStub() as stub:
        captioner = LLMCaptioner.openai(api_key=KEY, api_base=stub.openai_base_url)
        pack = _pack(
            milvus_uri, fast_clip, captioner=captioner, caption_embed=MockEmbedding(embed_dim=8)
        )
        try:
            pack.ingest(image_dir)
            files = sorted(image_dir.rglob("*.png"))
            changed, gone = files[0], files[1]
            old = {r["path"]: r["text"] for r in _rows(pack).values()}
            changed.write_bytes(files[4].read_bytes())
            gone.unlink()
            stub.reset()
            pack.ingest(image_dir, sync=True)
            rows = {r["path"]: r["text"] for r in _rows(pack).values()}
            assert str(gone) not in rows
            assert rows[str(changed)] == old[str(files[4])]  # same bytes, same caption
            assert not [r for r in stub.requests if r.path.endswith("/chat/completions")]
        finally:
            pack.store.close()


def test_captions_off_leaves_no_caption_collection(milvus_uri, fast_clip, image_dir) -> None:
    pack = _pack(milvus_uri, fast_clip)  # the test env sets CLIP_HYBRID_CAPTIONER=none
    try:
        report = pack.ingest(image_dir)
        assert report.captions is None and not pack.caption_store.exists()
    finally:
        pack.store.close()


def test_milvus_lite_noise_is_not_logged(milvus_uri, caplog) -> None:
    """Milvus Lite lacks AllocTimestamp: without store._LiteNoiseFilter every collection
    creation logs a gRPC ERROR traceback and every row scan a pymilvus warning."""
    import logging

    from llama_index.packs.clip_hybrid import ImageStore

    store = ImageStore(uri=milvus_uri)
    try:
        with caplog.at_level(logging.DEBUG):
            store.ensure(dim=4)
            row = {"id": "a", "vector": [1.0, 0, 0, 0], "path": "/a", "sha256": "h"}
            row |= {"folder": "", "category": "", "width": 1, "height": 1, "size": 1, "mtime": 0.0}
            store.upsert([row])
            assert [r["id"] for r in store.iter_rows(["path"])] == ["a"]
    finally:
        store.close()
    assert "Method not implemented" not in caplog.text and "mvccTs" not in caplog.text


def test_auto_caption_embedder_follows_the_collection(
    milvus_uri, fast_clip, image_dir, monkeypatch
) -> None:
    """Captions embedded offline stay searchable when a key appears later: 'auto' picks the
    model recorded with the collection, not text-embedding-3-small."""
    require(local_embedding_available(), "the local extra (all-MiniLM-L6-v2)")
    from llama_index.packs.clip_hybrid.captions.embedding import embedding_identity

    with ApiStub() as stub:
        captioner = LLMCaptioner.openai(api_key=KEY, api_base=stub.openai_base_url)
        first = _pack(milvus_uri, fast_clip, captioner=captioner, caption_embed="local")
        try:
            first.ingest(image_dir)
        finally:
            first.store.close()
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", stub.openai_base_url)
        later = _pack(milvus_uri, fast_clip)
        try:
            model = later.caption_embed_model
            assert model is not None
            assert embedding_identity(model) == "sentence-transformers/all-MiniLM-L6-v2"
            assert "caption_vector" in later.search("a chart", mode="hybrid").branches
        finally:
            later.store.close()


def _names_in_id_order(folder: Path, count: int) -> list[str]:
    """``count`` file names whose image ids (uuid5 of the path) sort as the names do, so
    that every way of walking the rows (by name, by id) meets them in this order."""
    from llama_index.packs.clip_hybrid import image_node_id

    picked: list[str] = []
    for i in range(1000):
        name = f"copy{i:03d}.png"
        if not picked or image_node_id(folder / name) > image_node_id(folder / picked[-1]):
            picked.append(name)
            if len(picked) == count:
                return picked
    raise AssertionError("no names found")


def test_copies_of_one_image_caption_from_a_copy_that_still_has_its_bytes(
    milvus_uri, fast_clip, tmp_path, image_dir
) -> None:
    import hashlib
    import shutil

    root = tmp_path / "copies"
    root.mkdir()
    source = sorted(image_dir.rglob("*.png"))
    deleted, changed, kept = _names_in_id_order(root, 3)  # tried in this order
    for name in (deleted, changed, kept):  # three copies of the same bytes
        shutil.copyfile(source[0], root / name)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(source[1], other / "x.png")
    _pack(milvus_uri, fast_clip).ingest(root)  # indexed without captions
    (root / deleted).unlink()
    shutil.copyfile(source[2], root / changed)
    old = hashlib.sha256(source[0].read_bytes()).hexdigest()
    new = hashlib.sha256(source[2].read_bytes()).hexdigest()
    table = caption_table({old: "the original bytes", new: "the changed bytes"})
    with ApiStub(caption=table) as stub:
        captioner = LLMCaptioner.openai(api_key=KEY, api_base=stub.openai_base_url)
        pack = _pack(milvus_uri, fast_clip, captioner=captioner, caption_embed="none")
        try:
            report = pack.ingest(other)  # captions every image without one
            assert report.captions is not None
            failed = {Path(f.path).name: f.reason for f in report.captions.failed}
            assert set(failed) == {deleted, changed}
            assert "cannot read file" in failed[deleted]
            assert "changed since it was indexed" in failed[changed]
            texts = {Path(r["path"]).name: r["text"] for r in _rows(pack).values()}
            # The caption of the bytes the kept copy was indexed with, not the changed
            # copy's new content (nor the deleted copy's failure).
            assert texts == {kept: "the original bytes", "x.png": "Unknown."}
        finally:
            pack.store.close()


def test_settings_llm_and_embed_model_come_before_the_environment(
    milvus_uri, fast_clip, image_dir, monkeypatch
) -> None:
    """With no captioner or caption embedder given, the ones a user set in LlamaIndex's
    ``Settings`` are used, before the API keys in the environment; the report says so."""
    from llama_index.core import Settings
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.llms.openai import OpenAI

    with ApiStub() as stub:
        monkeypatch.delenv("CLIP_HYBRID_CAPTIONER")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment-0000")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.openai_base_url)
        settings_key = "sk-from-settings-000000"
        llm = OpenAI(model="gpt-4o-mini", api_key=settings_key, api_base=stub.openai_base_url)
        embed = OpenAIEmbedding(
            model="text-embedding-3-large", api_key=settings_key, api_base=stub.openai_base_url
        )
        monkeypatch.setattr(Settings, "_llm", llm)
        monkeypatch.setattr(Settings, "_embed_model", embed)
        with _pack(milvus_uri, fast_clip) as pack:
            captions = pack.ingest(image_dir).captions
        assert captions is not None and captions.failed == []
        assert captions.captioner_source == "Settings.llm"
        assert captions.embed_source == "Settings.embed_model"
        assert captions.to_dict()["embed_model"] == pack.caption_store.model
        assert "text-embedding-3-large" in captions.embed_model
        chats = [r for r in stub.requests if r.path.endswith("/chat/completions")]
        embeds = [r for r in stub.requests if r.path.endswith("/embeddings")]
        assert chats and {r.body["model"] for r in chats} == {"gpt-4o-mini"}
        assert embeds and {r.body["model"] for r in embeds} == {"text-embedding-3-large"}
        used = {r.headers["authorization"] for r in chats + embeds}
        assert used == {f"Bearer {settings_key}"}

        # An argument wins over Settings; without Settings the environment's key is used.
        with _pack(str(Path(milvus_uri).with_name("other.db")), fast_clip, captioner="none") as p:
            assert p.ingest(image_dir).captions is None
        monkeypatch.setattr(Settings, "_llm", None)
        monkeypatch.setattr(Settings, "_embed_model", None)
        with _pack(str(Path(milvus_uri).with_name("env.db")), fast_clip) as pack:
            captions = pack.ingest(image_dir).captions
        assert captions is not None and captions.captioner == "openai:gpt-4o"
        assert captions.captioner_source == "OPENAI_API_KEY"
        assert captions.embed_source == "OPENAI_API_KEY"
        assert captions.embed_model == "text-embedding-3-small"
