"""ClipHybridPack end to end on Milvus Lite with the tiny CLIP checkpoint."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.embeddings import MultiModalEmbedding as MultiModalEmbeddingBase
from llama_index.core.schema import ImageDocument, ImageNode
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.packs.clip_hybrid import (
    ClipHybridPack,
    CollectionMismatchError,
    FastClipEmbedding,
    image_node_id,
)
from llama_index.packs.clip_hybrid.testing import TinyClipConfig, make_tiny_clip_checkpoint
from llama_index.packs.clip_hybrid.testing.bad_images import make_odd_images
from llama_index.retrievers.selfhit import SelfHitFilteringRetriever


def _paths(hits) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.node.metadata["file_path"] for h in hits]


def test_ingest_then_reingest_does_no_forward_passes(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    n = len(list(image_dir.rglob("*.png")))
    first = pack.ingest(image_dir)
    assert (first.indexed, first.unchanged, first.forward_passes) == (n, 0, n)
    assert first.failed == []
    again = pack.ingest(image_dir)
    assert (again.indexed, again.unchanged, again.forward_passes) == (0, n, 0)
    assert pack.store.count() == n


def test_changed_file_is_reembedded_in_place_and_sync_removes_deleted(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    pack.ingest(image_dir)
    files = sorted(image_dir.rglob("*.png"))
    changed, deleted = files[0], files[1]
    shutil.copyfile(files[-1], changed)  # new pixels at the same path
    deleted.unlink()
    kept = pack.ingest(image_dir)  # without sync nothing is removed
    assert (kept.indexed, kept.removed) == (1, 0)
    assert pack.store.count() == len(files)
    row = pack.store.get([image_node_id(changed)], ["sha256"])
    assert (
        row[image_node_id(changed)]["sha256"]
        == pack.store.get([image_node_id(files[-1])], ["sha256"])[image_node_id(files[-1])][
            "sha256"
        ]
    )
    synced = pack.ingest(image_dir, sync=True)
    assert (synced.indexed, synced.removed) == (0, 1)
    assert pack.store.count() == len(files) - 1
    assert pack.store.get([image_node_id(deleted)], ["path"]) == {}


def test_same_bytes_at_two_paths_two_rows_one_forward_pass(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    source = next(image_dir.rglob("bar_chart_0.png"))
    twin = image_dir / "copies" / "twin.png"
    twin.parent.mkdir()
    shutil.copyfile(source, twin)
    report = pack.ingest(image_dir)
    n = len(list(image_dir.rglob("*.png")))
    assert report.indexed == n and report.forward_passes == n - 1 and report.reused == 1
    rows = pack.store.get([image_node_id(source), image_node_id(twin)], ["vector"])
    assert rows[image_node_id(source)]["vector"] == rows[image_node_id(twin)]["vector"]
    # Both copies are the query image's bytes: image->image drops both.
    result = pack.search(source)
    assert str(twin) not in _paths(result.hits) and str(source) not in _paths(result.hits)
    assert result.self_hits is not None
    assert sorted(d.reason for d in result.self_hits.dropped) == ["bytes", "path"]


def test_bad_files_are_reported_and_never_abort(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    odd = make_odd_images(image_dir / "odd")
    report = pack.ingest(image_dir)
    bad = {i.path.name: i.expect_failure for i in odd if i.expect_failure}
    failures = {Path(f.path).name: f.reason for f in report.failed}
    assert set(failures) == set(bad)
    for name, word in bad.items():
        assert word in failures[name]
    good = len(list(image_dir.rglob("*.png"))) - sum(1 for n in bad if n.endswith(".png"))
    assert report.indexed == pack.store.count() >= good
    # Failures are retried on the next run (and fail again, with the same reasons).
    again = pack.ingest(image_dir)
    assert {Path(f.path).name for f in again.failed} == set(bad)


def test_text_to_image_scores_are_real_cosines(pack, image_dir, fast_clip) -> None:  # type: ignore[no-untyped-def]
    pack.ingest(image_dir)
    hits = pack.run("system architecture diagram")
    assert len(hits) == 3
    query = np.asarray(fast_clip.get_query_embedding("system architecture diagram"))
    stored = pack.store.get([h.node.node_id for h in hits], ["vector"])
    for hit in hits:
        cosine = float(query @ np.asarray(stored[hit.node.node_id]["vector"]))
        assert hit.score == pytest.approx(cosine, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_image_queries_filter_the_self_hit_unless_asked(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    pack.ingest(image_dir)
    query = next(image_dir.rglob("flowchart_0.png"))
    hits = pack.run(query)
    assert len(hits) == 3 and str(query) not in _paths(hits)
    kept = pack.retrieve(query, keep_self_hit=True)
    assert _paths(kept)[0] == str(query)
    assert kept[0].score == pytest.approx(1.0, abs=1e-4)
    as_text = pack.run(str(query), mode="image")
    assert _paths(as_text) == _paths(hits)


async def test_async_matches_sync(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    pack.ingest(image_dir)
    query = next(image_dir.rglob("diagram_1.png"))
    assert _paths(await pack.aretrieve(query)) == _paths(pack.retrieve(query))
    text = "a bar chart"
    assert _paths(await pack.aretrieve(text)) == _paths(pack.retrieve(text))


def test_metadata_filters_work_on_image_retrieval(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    pack.ingest(image_dir)
    only_flow = MetadataFilters(filters=[MetadataFilter(key="category", value="flowchart")])
    hits = pack.run("a diagram", filters=only_flow, similarity_top_k=10)
    assert len(hits) == 2 and {h.node.metadata["category"] for h in hits} == {"flowchart"}
    query = next(image_dir.rglob("landscape_photo_0.png"))
    either = MetadataFilters(
        filters=[
            MetadataFilter(
                key="category", value=["bar_chart", "text_en"], operator=FilterOperator.IN
            )
        ]
    )
    hits = pack.run(query, filters=either, similarity_top_k=10)
    assert {h.node.metadata["category"] for h in hits} == {"bar_chart", "text_en"}
    assert len(hits) == 5


def test_image_nodes_and_documents_with_their_metadata(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    files = sorted(image_dir.rglob("*.png"))
    inline = base64.b64encode(files[2].read_bytes()).decode()
    nodes = [
        ImageNode(image_path=str(files[0]), metadata={"owner": "ana", "year": 2024}),
        ImageDocument(image_path=str(files[1]), metadata={"owner": "bo", "year": 2023}),
        ImageNode(image=inline, metadata={"owner": "cy", "year": 2022}),
        ImageNode(image_url="http://example.invalid/x.png"),
    ]
    report = pack.ingest(nodes)
    assert report.indexed == 3
    assert [f.reason for f in report.failed] == [
        "image_url is not fetched; download the file and pass its path"
    ]
    recent = MetadataFilters(
        filters=[MetadataFilter(key="year", value=2023, operator=FilterOperator.GTE)]
    )
    hits = pack.run("anything", filters=recent, similarity_top_k=10)
    assert sorted(h.node.metadata["owner"] for h in hits) == ["ana", "bo"]


def test_existing_collection_of_another_model_is_refused(
    tmp_path, milvus_uri, fast_clip, image_dir, tiny_clip_checkpoint
) -> None:  # type: ignore[no-untyped-def]
    ClipHybridPack(uri=milvus_uri, embed_model=fast_clip).ingest(image_dir)
    other_ckpt = make_tiny_clip_checkpoint(
        tmp_path / "other.pt", config=TinyClipConfig(embed_dim=16)
    )
    other = ClipHybridPack(uri=milvus_uri, clip_model=str(other_ckpt))
    with pytest.raises(CollectionMismatchError, match=r"was built with the model .* but this"):
        other.ingest(image_dir)
    with pytest.raises(CollectionMismatchError, match=r"other\.pt"):
        other.run("a diagram")
    # Same dimension, another model (the same shapes, another seed): refused as well.
    twin = make_tiny_clip_checkpoint(tmp_path / "seed1.pt", seed=1)
    with pytest.raises(CollectionMismatchError, match=r"seed1\.pt"):
        ClipHybridPack(uri=milvus_uri, clip_model=str(twin)).ingest(image_dir)
    # Nothing was dropped or overwritten.
    assert ClipHybridPack(uri=milvus_uri, embed_model=fast_clip).store.count() == len(
        list(image_dir.rglob("*.png"))
    )


def test_other_dimension_is_refused_before_anything_is_written(
    tmp_path, milvus_uri, image_dir
) -> None:  # type: ignore[no-untyped-def]
    from llama_index.packs.clip_hybrid import ImageStore

    store = ImageStore(uri=milvus_uri)
    store.ensure(dim=8)  # no model recorded (made by other code)
    store.close()
    pack = ClipHybridPack(
        uri=milvus_uri,
        clip_model=str(make_tiny_clip_checkpoint(tmp_path / "c.pt")),
    )
    with pytest.raises(CollectionMismatchError, match=r"holds 8-dim .* makes 32-dim"):
        pack.ingest(image_dir)
    assert pack.store.count() == 0


def test_unchanged_rerun_does_not_load_the_model(
    milvus_uri, image_dir, tiny_clip_checkpoint
) -> None:  # type: ignore[no-untyped-def]
    ClipHybridPack(uri=milvus_uri, clip_model=str(tiny_clip_checkpoint)).ingest(image_dir)
    fresh = ClipHybridPack(uri=milvus_uri, clip_model=str(tiny_clip_checkpoint))
    report = fresh.ingest(image_dir)
    assert report.forward_passes == 0 and report.indexed == 0
    assert not fresh.embed_model.is_loaded


def test_empty_index_returns_nothing(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    assert pack.run("a diagram") == []
    assert pack.run(next(image_dir.rglob("*.png"))) == []


def test_get_modules_exposes_working_parts(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    pack.ingest(image_dir)
    modules = pack.get_modules()
    assert set(modules) >= {"embed_model", "store", "text_retriever", "image_retriever"}
    assert isinstance(modules["image_retriever"], SelfHitFilteringRetriever)
    query = next(image_dir.rglob("ui_screenshot_0.png"))
    assert _paths(modules["image_retriever"].retrieve(query)) == _paths(pack.run(query))
    assert _paths(
        modules["image_retriever_unfiltered"].retrieve(
            __import__("llama_index.core.schema", fromlist=["QueryBundle"]).QueryBundle(
                query_str="", image_path=str(query)
            )
        )
    )[0] == str(query)


def test_reopen_in_a_new_process_searches_without_reingesting(
    pack, image_dir, tiny_clip_checkpoint, milvus_uri
) -> None:  # type: ignore[no-untyped-def]
    pack.ingest(image_dir)
    expected = _paths(pack.run("mountains at sunset"))
    pack.store.close()
    code = textwrap.dedent(
        f"""
        from llama_index.packs.clip_hybrid import ClipHybridPack
        pack = ClipHybridPack(uri={milvus_uri!r}, clip_model={str(tiny_clip_checkpoint)!r},
                              precision="fp32", similarity_top_k=3)
        for hit in pack.run("mountains at sunset"):
            print(hit.node.metadata["file_path"])
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == expected


def test_killed_mid_run_loses_nothing_and_next_run_finishes(
    image_dir, tiny_clip_checkpoint, milvus_uri
) -> None:  # type: ignore[no-untyped-def]
    code = textwrap.dedent(
        f"""
        import os, signal, threading, time
        from llama_index.packs.clip_hybrid import ClipHybridPack
        pack = ClipHybridPack(uri={milvus_uri!r}, clip_model={str(tiny_clip_checkpoint)!r},
                              precision="fp32", batch_size=2)
        original = pack.store.upsert
        calls = []
        def upsert(rows):
            original(rows)
            calls.append(len(rows))
            if len(calls) == 3:  # SIGKILL right after the third chunk is written
                os.kill(os.getpid(), signal.SIGKILL)
        pack.store.upsert = upsert
        pack.ingest({str(image_dir)!r})
        """
    )
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert killed.returncode == -9
    survivor = ClipHybridPack(
        uri=milvus_uri, clip_model=str(tiny_clip_checkpoint), precision="fp32"
    )
    assert survivor.store.count() == 6  # three chunks of two were written
    report = survivor.ingest(image_dir)
    n = len(list(image_dir.rglob("*.png")))
    assert (report.unchanged, report.indexed) == (6, n - 6)
    ids = [row["id"] for row in survivor.store.iter_rows(["id"])]
    assert len(ids) == len(set(ids)) == n


def test_constructor_does_no_io(tmp_path) -> None:  # type: ignore[no-untyped-def]
    uri = tmp_path / "never" / "created.db"
    pack = ClipHybridPack(uri=str(uri), clip_model=str(tmp_path / "missing.pt"))
    assert not uri.exists() and not uri.parent.exists()
    assert isinstance(pack.embed_model, FastClipEmbedding) and not pack.embed_model.is_loaded
    assert "token" not in repr(pack)
    assert os.fspath(uri) in repr(pack)


def test_any_multimodal_embedding_works(
    milvus_uri, image_dir, tiny_clip_embedding, fast_clip
) -> None:  # type: ignore[no-untyped-def]
    """Upstream ClipEmbedding (unnormalised, one image per pass) as the embed model."""
    upstream = ClipHybridPack(uri=milvus_uri, embed_model=tiny_clip_embedding, similarity_top_k=3)
    files = sorted(image_dir.rglob("*.png"))
    inline = ImageNode(image=base64.b64encode(files[0].read_bytes()).decode())
    report = upstream.ingest([image_dir, inline])
    assert report.indexed == len(files) + 1 and report.failed == []
    rows = upstream.store.get([image_node_id(files[3])], ["vector"])
    vector = np.asarray(rows[image_node_id(files[3])]["vector"])
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)  # normalised on the way in
    ours = np.asarray(fast_clip.get_image_embedding(str(files[3])))
    assert float(vector @ ours) >= 0.999
    query = files[5]
    assert str(query) not in _paths(upstream.run(query))


def test_not_recursive_takes_only_the_top_folder(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    top = next(image_dir.rglob("diagram_0.png"))
    shutil.copyfile(top, image_dir / "top.png")
    report = pack.ingest(image_dir, recursive=False)
    assert (report.seen, report.indexed) == (1, 1)
    assert pack.ingest(image_dir).indexed == len(list(image_dir.rglob("*.png"))) - 1


def test_ingestion_loads_only_the_image_tower(milvus_uri, tiny_clip_checkpoint, image_dir) -> None:  # type: ignore[no-untyped-def]
    pack = ClipHybridPack(
        uri=milvus_uri, clip_model=str(tiny_clip_checkpoint), captioner="none", similarity_top_k=3
    )
    assert pack.ingest(image_dir).indexed > 0
    assert pack.embed_model.loaded_towers == {"visual"}
    assert len(pack.run("system architecture diagram")) == 3  # the text tower loads now
    assert pack.embed_model.loaded_towers == {"visual", "text"}


def test_a_zero_vector_from_a_custom_embedder_fails_its_image_not_the_index(
    milvus_uri, image_dir
) -> None:
    """An embedder that returns all zeros for one image: that image is a named failure.
    Stored, the zero vector would make every later search refuse the index as damaged."""
    from llama_index.core.embeddings import MultiModalEmbedding

    blank = sorted(image_dir.rglob("*.png"))[0]

    class Picky(MultiModalEmbedding):
        def _vector(self, key: str) -> list[float]:
            if key == str(blank):
                return [0.0] * 8
            digest = hashlib.sha256(key.encode()).digest()
            return [b / 255 + 0.01 for b in digest[:8]]

        def _get_image_embedding(self, img_file_path):  # type: ignore[no-untyped-def]
            return self._vector(str(img_file_path))

        async def _aget_image_embedding(self, img_file_path):  # type: ignore[no-untyped-def]
            return self._vector(str(img_file_path))

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._vector(text)

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._vector(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._vector(query)

    with ClipHybridPack(uri=milvus_uri, embed_model=Picky(model_name="picky")) as pack:
        report = pack.ingest(image_dir)
        assert [f.path for f in report.failed] == [str(blank)]
        assert "zero or non-finite vector" in report.failed[0].reason
        assert pack.search("a chart", mode="text").hits  # the index is not "damaged"


def test_text_nodes_and_other_objects_are_named_failures(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    """A TextNode given to ingest is named by its id or file (its repr, the whole text,
    was the failure's 'path'); the images beside it are indexed."""
    from llama_index.core.schema import TextNode

    text = TextNode(text="a long note " * 500)
    from_file = TextNode(text="notes", metadata={"file_path": "/docs/notes.txt"})
    image = next(image_dir.rglob("*.png"))
    report = pack.ingest([text, from_file, 42, image])
    assert report.indexed == 1
    failed = {f.path: f.reason for f in report.failed}
    assert set(failed) == {f"node {text.node_id}", "/docs/notes.txt", "42"}, failed
    assert "TextNode is not an image" in failed["/docs/notes.txt"]
    assert "unsupported input int" in failed["42"]
    assert all("a long note" not in f.path + f.reason for f in report.failed)


def test_a_fresh_pack_reads_rows_by_id_first(pack, image_dir, milvus_uri, fast_clip) -> None:  # type: ignore[no-untyped-def]
    """Reading rows by id is a fresh process's first call when the preview page opens an
    image (``GET /api/image/<id>``): it must load the collection Milvus keeps released."""
    pack.ingest(image_dir)
    first = next(image_dir.rglob("*.png"))
    pack.close()
    fresh = ClipHybridPack(uri=milvus_uri, embed_model=fast_clip, captioner="none")
    try:
        row = fresh.store.get([image_node_id(first)], ["path"])
        assert row[image_node_id(first)]["path"] == str(first)
    finally:
        fresh.close()


async def test_two_ingests_at_once_into_a_new_index_both_land(
    milvus_uri, fast_clip, image_dir
) -> None:  # type: ignore[no-untyped-def]
    """aingest runs on a worker thread: two at once both created the collection, and the
    second failed with "collection already exists" (its images never indexed)."""
    import asyncio

    folders = sorted(p for p in image_dir.iterdir() if p.is_dir())[:3]
    pack = ClipHybridPack(uri=milvus_uri, embed_model=fast_clip, captioner="none")
    try:
        reports = await asyncio.gather(*(pack.aingest(folder) for folder in folders))
        expected = sum(len(list(f.rglob("*.png"))) for f in folders)
        assert sum(r.indexed for r in reports) == expected == pack.store.count()
    finally:
        pack.close()


def test_overwrite_with_no_image_in_the_inputs_keeps_the_index(pack, image_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """overwrite=True dropped the index first: over an empty folder (an unmounted drive)
    the old index was replaced by nothing."""
    pack.ingest(image_dir)
    count = pack.store.count()
    empty = tmp_path / "mount_point"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"overwrite=True with no image in .*mount_point"):
        pack.ingest(empty, overwrite=True)
    assert pack.store.count() == count
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "fake.png").write_bytes(b"junk, not a PNG")
    for nothing in (
        tmp_path / "notes.txt",
        tmp_path / "fake.png",
        [tmp_path / "missing.png", tmp_path / "notes.txt"],
        [ImageNode(image_path=str(tmp_path / "missing.png"))],
        [None],
    ):
        with pytest.raises(ValueError, match="overwrite=True with no image"):
            pack.ingest(nothing, overwrite=True)
        assert pack.store.count() == count, nothing
    one = sorted(image_dir.rglob("*.png"))[:1]
    assert pack.ingest(iter(one), overwrite=True).indexed == 1  # an iterator works too
    assert pack.store.count() == 1
    # Formats without a magic number in our sniffing list are images too (PPM here).
    from PIL import Image

    ppm = tmp_path / "ppm" / "x.ppm"
    ppm.parent.mkdir()
    Image.open(one[0]).convert("RGB").save(ppm)
    assert pack.ingest(ppm, overwrite=True).indexed == 1  # given by name, as ingest takes it


def test_a_rebuild_cut_short_leaves_the_old_index_serving(milvus_uri, fast_clip, image_dir) -> None:  # type: ignore[no-untyped-def]
    """overwrite=True dropped the index first: a rebuild that failed half way (kill -9,
    a model error) served only the part it had built. It is built beside, then swapped."""
    from llama_index.core.embeddings import MultiModalEmbedding

    class FailsHalfWay(MultiModalEmbedding):  # a user's embedder that breaks mid-run
        calls: int = 0

        def _get_image_embedding(self, img_file_path):  # type: ignore[no-untyped-def]
            return self._get_image_embeddings([img_file_path])[0]

        def _get_image_embeddings(self, paths):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("the GPU fell over")
            return fast_clip.get_image_embedding_batch(paths)

        async def _aget_image_embedding(self, img_file_path):  # type: ignore[no-untyped-def]
            return self._get_image_embedding(img_file_path)

        def _get_text_embedding(self, text):  # type: ignore[no-untyped-def]
            return fast_clip.get_text_embedding(text)

        def _get_query_embedding(self, query):  # type: ignore[no-untyped-def]
            return fast_clip.get_query_embedding(query)

        async def _aget_query_embedding(self, query):  # type: ignore[no-untyped-def]
            return fast_clip.get_query_embedding(query)

    with ClipHybridPack(uri=milvus_uri, embed_model=fast_clip, captioner="none") as pack:
        pack.ingest(image_dir)
        count = pack.store.count()
        before = _paths(pack.retrieve("a chart", mode="text"))
    broken = ClipHybridPack(
        uri=milvus_uri, embed_model=FailsHalfWay(), captioner="none", batch_size=4
    )
    with broken, pytest.raises(RuntimeError, match="fell over"):
        broken.ingest(image_dir, overwrite=True)
    with ClipHybridPack(uri=milvus_uri, embed_model=fast_clip, captioner="none") as pack:
        assert pack.store.count() == count
        assert _paths(pack.retrieve("a chart", mode="text")) == before
        one = sorted(image_dir.rglob("*.png"))[:2]
        assert pack.ingest(one, overwrite=True).indexed == 2  # the leftover is cleared
        assert pack.store.count() == 2 and len(pack.retrieve("a chart", mode="text")) == 2
        names = set(pack.store.client.list_collections())
        assert names == {pack.store.collection_name}, names  # nothing staged is left


def test_a_rebuild_swaps_in_captions_and_bm25_too(hybrid_pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    import os

    before = [h.node.node_id for h in hybrid_pack.retrieve("系统架构图", mode="hybrid")]
    report = hybrid_pack.ingest(image_dir, overwrite=True)
    assert report.captions is not None and report.captions.failed == []
    after = hybrid_pack.search("系统架构图", mode="hybrid")
    assert "bm25" in after.branches and [h.node.node_id for h in after.hits] == before
    names = set(hybrid_pack.store.client.list_collections())
    assert names == {hybrid_pack.store.collection_name, hybrid_pack.caption_store.collection_name}
    assert os.path.isdir(hybrid_pack.bm25_path) and not os.path.exists(
        hybrid_pack.bm25_path + "_rebuild"
    )


def test_a_rebuild_leaves_other_collections_alone_and_undoes_a_swap_cut_short(
    milvus_uri, fast_clip, image_dir
) -> None:  # type: ignore[no-untyped-def]
    """A user's own "images_rebuild" collection was dropped by a rebuild of "images"; a
    kill between the swap's two renames left the old index aside for the next rebuild to
    drop."""
    from llama_index.packs.clip_hybrid.ingest.rebuild import PREVIOUS

    files = sorted(image_dir.rglob("*.png"))
    with ClipHybridPack(
        uri=milvus_uri, embed_model=fast_clip, captioner="none", collection_name="images_rebuild"
    ) as mine:
        mine.ingest(files[:3])
    with ClipHybridPack(uri=milvus_uri, embed_model=fast_clip, captioner="none") as pack:
        pack.ingest(files[3:8])
        pack.ingest(files[8:10], overwrite=True)
        assert pack.store.count() == 2
        client = pack.store.client
        assert client.has_collection("images_rebuild")  # the user's, untouched
        client.rename_collection("images", "images" + PREVIOUS)  # a kill mid-swap
    broken = ClipHybridPack(uri=milvus_uri, embed_model=_Broken(), captioner="none")
    with broken, pytest.raises(RuntimeError, match="broken"):  # the next rebuild fails too...
        broken.ingest(files[10:11], overwrite=True)
    with ClipHybridPack(uri=milvus_uri, embed_model=fast_clip, captioner="none") as pack:
        assert pack.store.count() == 2  # ...and the old index is back, not dropped
        pack.ingest(files[10:11], overwrite=True)
        assert pack.store.count() == 1
        assert set(pack.store.client.list_collections()) == {"images", "images_rebuild"}
    with ClipHybridPack(
        uri=milvus_uri, embed_model=fast_clip, captioner="none", collection_name="images_rebuild"
    ) as mine:
        assert mine.store.count() == 3


class _Broken(MultiModalEmbeddingBase):
    """A user's embedder that fails on every image."""

    def _get_image_embedding(self, img_file_path):  # type: ignore[no-untyped-def]
        raise RuntimeError("broken")

    async def _aget_image_embedding(self, img_file_path):  # type: ignore[no-untyped-def]
        raise RuntimeError("broken")

    def _get_text_embedding(self, text):  # type: ignore[no-untyped-def]
        raise RuntimeError("broken")

    def _get_query_embedding(self, query):  # type: ignore[no-untyped-def]
        raise RuntimeError("broken")

    async def _aget_query_embedding(self, query):  # type: ignore[no-untyped-def]
        raise RuntimeError("broken")
