"""SelfHitFilteringRetriever around upstream MultiModalVectorStoreIndex on Milvus Lite."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from llama_index.core.schema import ImageNode, QueryBundle
from llama_index.retrievers.selfhit import (
    ImageQueryBundle,
    SelfHitFilteringRetriever,
    to_query_bundle,
)
from PIL import Image


def _paths(hits) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(Path(h.node.metadata["file_path"]).resolve()) for h in hits]


def test_upstream_returns_the_query_image_first(corpus, image_files):  # type: ignore[no-untyped-def]
    """The trap this package exists for: the query comes back first, at cosine 1.0."""
    inner = corpus.build(image_files).as_retriever(image_similarity_top_k=3)
    hits = inner.image_to_image_retrieve(str(image_files[0]))
    assert _paths(hits)[0] == str(image_files[0].resolve())
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_same_path_is_dropped_and_k_results_remain(corpus, image_files):  # type: ignore[no-untyped-def]
    inner = corpus.build(image_files).as_retriever(image_similarity_top_k=4)
    retriever = SelfHitFilteringRetriever(inner)
    hits = retriever.retrieve(image_files[0])
    assert len(hits) == 4
    assert str(image_files[0].resolve()) not in _paths(hits)
    # The survivors are upstream's ranking minus the self-hit, in order.
    upstream = inner.image_to_image_retrieve(str(image_files[0]))
    wider = SelfHitFilteringRetriever(inner, similarity_top_k=3)
    assert _paths(wider.retrieve(image_files[0])) == _paths(upstream)[1:4]
    report = retriever.last_report
    assert report is not None
    assert [d.reason for d in report.dropped] == ["path"]
    assert report.dropped[0].score == pytest.approx(1.0, abs=1e-5)


def test_an_agent_passing_a_path_through_a_retriever_tool_gets_an_image_search(corpus, image_files):  # type: ignore[no-untyped-def]
    """RetrieverTool sends ``"<path>\\n"``: still an image query, self-hit filtered (the
    newline made it a text query)."""
    from llama_index.core.tools import RetrieverTool

    inner = corpus.build(image_files).as_retriever(image_similarity_top_k=3)
    tool = RetrieverTool.from_defaults(
        retriever=SelfHitFilteringRetriever(inner),
        name="similar_images",
        description="Images that look like the image at the given path.",
    )
    expected = SelfHitFilteringRetriever(inner).retrieve(image_files[0])
    assert len(expected) == 3 and str(image_files[0].resolve()) not in _paths(expected)
    positional = tool.call(str(image_files[0])).raw_output  # "<path>\n\n"
    keyword = tool.call(input=str(image_files[0])).raw_output  # "\ninput is <path>\n"
    assert _paths(positional) == _paths(expected) == _paths(keyword)
    # A wrapped text that merely ends like a file name stays text (no FileNotFoundError)
    bundle = to_query_bundle("\nquery is diagrams like arch.png\n")
    assert not isinstance(bundle, ImageQueryBundle) and bundle.image_path is None
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):  # a bare path: named
        to_query_bundle(str(image_files[0].parent / "missing.png"))


def test_relative_and_absolute_paths_match(corpus, image_files, monkeypatch):  # type: ignore[no-untyped-def]
    # Indexed with absolute paths, queried with a relative one (and the reverse below).
    inner = corpus.build(image_files).as_retriever(image_similarity_top_k=3)
    monkeypatch.chdir(image_files[0].parent.parent)
    relative = f"./{image_files[0].parent.name}/{image_files[0].name}"
    hits = SelfHitFilteringRetriever(inner, match_bytes=False).retrieve(relative)
    assert str(image_files[0].resolve()) not in _paths(hits)
    assert len(hits) == 3


def test_relative_indexed_path_matches_absolute_query(corpus, image_files, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(image_files[0].parent)
    relative_files = [Path(p.name) for p in image_files]
    inner = corpus.build(relative_files).as_retriever(image_similarity_top_k=3)
    retriever = SelfHitFilteringRetriever(inner, match_bytes=False)
    retriever.retrieve(image_files[0].resolve())
    assert [d.reason for d in retriever.last_report.dropped] == ["path"]


def test_same_bytes_at_another_path(corpus, image_files, tmp_path):  # type: ignore[no-untyped-def]
    inner = corpus.build(image_files).as_retriever(image_similarity_top_k=3)
    copy = tmp_path / "elsewhere" / "copy-of-first.png"
    copy.parent.mkdir()
    shutil.copyfile(image_files[0], copy)

    filtered = SelfHitFilteringRetriever(inner)
    hits = filtered.retrieve(copy)
    assert str(image_files[0].resolve()) not in _paths(hits)
    assert [d.reason for d in filtered.last_report.dropped] == ["bytes"]

    # With the bytes rule off, the indexed original is a legitimate, different file.
    by_path_only = SelfHitFilteringRetriever(inner, match_bytes=False)
    kept = by_path_only.retrieve(copy)
    assert _paths(kept)[0] == str(image_files[0].resolve())
    assert by_path_only.last_report.dropped == []


def test_query_not_in_index_drops_nothing(corpus, image_files):  # type: ignore[no-untyped-def]
    """Where upstream's notebook slices [1:], a real best match would be lost."""
    outsider = image_files[-1]
    inner = corpus.build(image_files[:-1]).as_retriever(image_similarity_top_k=3)
    upstream = inner.image_to_image_retrieve(str(outsider))
    retriever = SelfHitFilteringRetriever(inner)
    hits = retriever.retrieve(outsider)
    assert _paths(hits) == _paths(upstream)
    assert retriever.last_report.dropped == []


def test_duplicates_of_the_query_are_all_dropped_with_refetch(corpus, image_files, tmp_path):  # type: ignore[no-untyped-def]
    dupes = []
    for i in range(3):
        target = tmp_path / f"dup{i}" / image_files[0].name
        target.parent.mkdir()
        shutil.copyfile(image_files[0], target)
        dupes.append(target)
    inner = corpus.build(image_files + dupes).as_retriever(image_similarity_top_k=3)
    retriever = SelfHitFilteringRetriever(inner, overfetch=0)
    hits = retriever.retrieve(image_files[0])
    assert len(hits) == 3
    banned = {str(p.resolve()) for p in [image_files[0], *dupes]}
    assert not banned & set(_paths(hits))
    report = retriever.last_report
    assert sorted(d.reason for d in report.dropped) == ["bytes", "bytes", "bytes", "path"]
    assert report.rounds >= 2  # the first fetch of 3 was all self-hits


def test_k_larger_than_corpus_returns_every_other_image(corpus, image_files):  # type: ignore[no-untyped-def]
    inner = corpus.build(image_files[:4]).as_retriever(image_similarity_top_k=50)
    hits = SelfHitFilteringRetriever(inner).retrieve(image_files[0])
    assert sorted(_paths(hits)) == sorted(str(p.resolve()) for p in image_files[1:4])


def test_empty_index_returns_nothing(corpus, image_files):  # type: ignore[no-untyped-def]
    inner = corpus.build([]).as_retriever(image_similarity_top_k=3)
    assert SelfHitFilteringRetriever(inner).retrieve(image_files[0]) == []


def _jpeg_copy(src: Path, dest: Path) -> Path:
    with Image.open(src) as img:
        img.convert("RGB").save(dest, format="JPEG", quality=80)
    return dest


def test_near_duplicate_rule_on_and_off(corpus, image_files, tmp_path):  # type: ignore[no-untyped-def]
    inner = corpus.build(image_files).as_retriever(image_similarity_top_k=len(image_files))
    query = _jpeg_copy(image_files[6], tmp_path / "reencoded.jpg")

    off = SelfHitFilteringRetriever(inner, similarity_top_k=3)
    hits = off.retrieve(query)
    # A re-encoded JPEG is another file with other bytes: kept by default, scoring < 1.
    assert _paths(hits)[0] == str(image_files[6].resolve())
    original_score = hits[0].score
    assert original_score < 1.0
    runner_up = hits[1].score
    assert runner_up < original_score

    threshold = (original_score + runner_up) / 2
    on = SelfHitFilteringRetriever(inner, similarity_top_k=3, near_duplicate_threshold=threshold)
    kept = on.retrieve(query)
    assert str(image_files[6].resolve()) not in _paths(kept)
    assert [d.reason for d in on.last_report.dropped] == ["near_duplicate"]
    assert len(kept) == 3


async def test_async_path_matches_sync(corpus, image_files):  # type: ignore[no-untyped-def]
    inner = corpus.build(image_files, use_async_client=True).as_retriever(image_similarity_top_k=3)
    retriever = SelfHitFilteringRetriever(inner)
    sync_hits = retriever.retrieve(image_files[2])
    async_hits = await retriever.aretrieve(image_files[2])
    assert _paths(async_hits) == _paths(sync_hits)
    assert [d.reason for d in retriever.last_report.dropped] == ["path"]


@pytest.mark.parametrize(
    "form", ["bytes", "pil_from_file", "pil_in_memory", "image_node", "bundle"]
)
def test_query_forms(corpus, image_files, form):  # type: ignore[no-untyped-def]
    index = corpus.build(image_files)
    inner = index.as_retriever(image_similarity_top_k=3)
    target = image_files[1]
    if form == "bytes":
        query = target.read_bytes()
        expected = "bytes"
    elif form == "pil_from_file":
        query = Image.open(target)
        expected = "path"
    elif form == "pil_in_memory":
        # A JPEG decoded in memory: no path, other pixels, so nothing is dropped.
        buf = io.BytesIO()
        Image.open(target).convert("RGB").save(buf, format="JPEG", quality=70)
        query = Image.open(io.BytesIO(buf.getvalue())).copy()
        expected = None
    elif form == "image_node":
        stored = next(
            h.node
            for h in inner.image_to_image_retrieve(str(target))
            if h.node.metadata["file_path"] == str(target)
        )
        # Only the id ties this node to the stored one: no path, other bytes.
        query = ImageNode(id_=stored.node_id, image=_png_b64(tmp=Image.new("RGB", (8, 8))))
        expected = "id"
    else:
        query = QueryBundle(query_str="", image_path=str(target))
        expected = "path"
    retriever = SelfHitFilteringRetriever(inner)
    hits = retriever.retrieve(query)
    reasons = [d.reason for d in retriever.last_report.dropped]
    if expected is None:
        assert reasons == []
    else:
        assert reasons == [expected]
        assert str(target.resolve()) not in _paths(hits)
    assert len(hits) == 3


def _png_b64(tmp: Image.Image) -> str:
    import base64

    buf = io.BytesIO()
    tmp.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_text_queries_pass_through(corpus, image_files):  # type: ignore[no-untyped-def]
    inner = corpus.build(image_files).as_retriever(similarity_top_k=1, image_similarity_top_k=3)
    retriever = SelfHitFilteringRetriever(inner)
    got = retriever.retrieve("system architecture diagram")
    expected = inner.retrieve("system architecture diagram")
    assert [h.node.node_id for h in got] == [h.node.node_id for h in expected]
    assert [h.score for h in got] == pytest.approx([h.score for h in expected])


def test_callers_bundle_and_inner_retriever_are_untouched(corpus, image_files):  # type: ignore[no-untyped-def]
    inner = corpus.build(image_files).as_retriever(image_similarity_top_k=3)
    bundle = QueryBundle(query_str="", image_path=str(image_files[0]))
    SelfHitFilteringRetriever(inner, overfetch=0, similarity_top_k=5).retrieve(bundle)
    assert bundle.embedding is None
    assert inner.image_similarity_top_k == 3


def test_missing_file_names_the_path(corpus, image_files, tmp_path):  # type: ignore[no-untyped-def]
    inner = corpus.build(image_files).as_retriever(image_similarity_top_k=3)
    missing = tmp_path / "nope" / "missing.png"
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        SelfHitFilteringRetriever(inner).retrieve(missing)
    # A folder or a FIFO exists: saying "does not exist" sent users looking for a typo.
    with pytest.raises(ValueError, match=r"is a folder; pass the path of one image file"):
        SelfHitFilteringRetriever(inner).retrieve(tmp_path)
    import os

    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ValueError, match=r"pipe\.png is not a regular file"):
        SelfHitFilteringRetriever(inner).retrieve(tmp_path / "pipe.png")


def test_unreadable_image_names_the_path(corpus, image_files, tmp_path):  # type: ignore[no-untyped-def]
    inner = corpus.build(image_files).as_retriever(image_similarity_top_k=3)
    fake = tmp_path / "page.png"
    fake.write_text("<html>not an image</html>")
    with pytest.raises(ValueError, match=r"page\.png.*cannot be read as an image") as info:
        SelfHitFilteringRetriever(inner).retrieve(fake)
    assert "object at 0x" not in str(info.value)  # no repr of an in-memory buffer
    drawing = tmp_path / "logo.svg"
    drawing.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>')
    with pytest.raises(ValueError, match=r"logo\.svg.*SVG \(vector\).*PNG, JPEG or WebP"):
        SelfHitFilteringRetriever(inner).retrieve(drawing)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.jpg.*0 bytes"):
        SelfHitFilteringRetriever(inner).retrieve(empty)
    # A JPEG cut short passes Pillow's verify(): it was found only by the embedder, whose
    # "image file is truncated" named no file.
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((320, 240), 64).convert("RGB").save(buf, format="JPEG")
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(buf.getvalue() + b"trailing bytes some cameras add")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(ValueError, match=r"cut\.jpg cannot be read as an image.*truncated"):
        SelfHitFilteringRetriever(inner).retrieve(cut)
    assert SelfHitFilteringRetriever(inner).retrieve(whole)  # a whole one, trailer and all


def test_a_pil_image_edited_in_memory_is_its_pixels_not_its_file(image_files) -> None:  # type: ignore[no-untyped-def]
    """paste/thumbnail/ImageDraw keep .filename: the file on disk was searched (and
    dropped as the self-hit) instead of the pixels given."""
    from llama_index.retrievers.selfhit import QueryImage

    with Image.open(image_files[0]) as image:
        image.load()
        assert QueryImage.from_pil(image).path == str(Path(image_files[0]).resolve())
        image.paste((255, 0, 0), (0, 0, *image.size))
        edited = QueryImage.from_pil(image)
    assert edited.path is None and edited.data is not None
    with Image.open(io.BytesIO(edited.data)) as sent:
        assert sent.getpixel((0, 0))[:3] == (255, 0, 0)
    # Never loaded, or closed: the file is what there is (a closed image raised before).
    with Image.open(image_files[0]) as lazy:
        assert QueryImage.from_pil(lazy).path == str(Path(image_files[0]).resolve())
    assert QueryImage.from_pil(lazy).path == str(Path(image_files[0]).resolve())


def test_a_file_rewritten_with_its_old_size_and_mtime_is_hashed_again(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """cp -p, rsync -t and tar put the old mtime back: a cache keyed by size and mtime
    kept matching the old bytes."""
    import hashlib
    import os

    from llama_index.retrievers.selfhit._identity import _FILE_HASHES

    path = tmp_path / "a.bmp"
    path.write_bytes(b"X" * 64)
    before = os.stat(path)
    assert _FILE_HASHES.get(str(path)) == hashlib.sha256(b"X" * 64).hexdigest()
    path.write_bytes(b"Y" * 64)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert _FILE_HASHES.get(str(path)) == hashlib.sha256(b"Y" * 64).hexdigest()


def test_an_image_document_with_inline_bytes_and_a_huge_image_as_queries(
    tmp_path, image_files
) -> None:  # type: ignore[no-untyped-def]
    import base64

    from llama_index.core.schema import ImageDocument
    from llama_index.retrievers.selfhit import QueryImage, to_query_bundle

    data = Path(image_files[0]).read_bytes()
    query = QueryImage.from_node(ImageDocument(image=base64.b64encode(data).decode()))
    assert query.data == data  # it said "neither a readable path nor bytes"
    huge = tmp_path / "huge.png"
    Image.new("1", (15000, 13000)).save(huge)  # past Pillow's decompression-bomb limit
    with pytest.raises(ValueError, match=r"huge\.png cannot be read as an image"):
        to_query_bundle(huge)
