"""The store's Milvus Lite reads without gRPC (_compat/milvus_lite_reads.py) against pymilvus.

Real Milvus Lite in a temp dir: rows upserted across flushes, rewritten, deleted, some
still unflushed, with dynamic metadata. Every read runs through the in-process collection
and through pymilvus (the module switched off) and must give the same hits and rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.packs.clip_hybrid import ImageStore
from llama_index.packs.clip_hybrid._compat import milvus_lite_reads as lite_direct
from llama_index.packs.clip_hybrid.milvus.images import BUILTIN_FIELDS

DIM = 8


def _rows(rng: np.random.Generator, ids: range, version: int) -> list[dict[str, Any]]:
    vectors = rng.standard_normal((len(ids), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        {
            "id": f"i{i:03d}",
            "vector": v.tolist(),
            "path": f"/p/{i}.jpg",
            "sha256": f"{i:064x}",
            "folder": "/p",
            "category": f"c{i % 3}",
            "width": i,
            "height": 1,
            "size": version,
            "mtime": 0.0,
            "camera": f"cam{i % 4}",  # dynamic metadata
        }
        for i, v in zip(ids, vectors, strict=True)
    ]


def _without_camera(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "camera"}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    rng = np.random.default_rng(4)
    store = ImageStore(uri=str(tmp_path / "direct.db"))
    store.ensure(dim=DIM)
    store.upsert(_rows(rng, range(0, 80), 1))
    store.upsert([_without_camera(r) for r in _rows(rng, range(90, 95), 1)])  # no camera
    store.flush()
    store.upsert(_rows(rng, range(30, 60), 2))  # rewritten in a second segment
    store.flush()
    store.delete(["i005", "i040"])
    store.flush()
    store.upsert(_rows(rng, range(75, 90), 3))  # unflushed: still in the memtable
    store.delete(["i010"])
    store.upsert([_without_camera(r) for r in _rows(rng, range(95, 97), 1)])
    yield store
    store.close()


def _both(store: Any, monkeypatch: pytest.MonkeyPatch, read: Any) -> tuple[Any, Any]:
    """``read(store)`` in-process (pymilvus' search and get made to fail meanwhile, so a
    silent fallback cannot pass) and through pymilvus."""
    assert store._lite() is not None, "direct reads should be active here"
    client = store.client

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("went through pymilvus")

    with monkeypatch.context() as patch:
        for name in ("search", "get", "query"):
            patch.setattr(client, name, refuse)
        ours = read(store)
    with monkeypatch.context() as patch:
        patch.setenv(lite_direct.ENV_SWITCH, "0")
        assert store._lite() is None
        theirs = read(store)
    return ours, theirs


@pytest.mark.parametrize(
    "filter_",
    ["", 'category == "c1"', 'camera in ["cam0", "cam2"]', 'camera not in ["cam1"]', "width > 70"],
)
@pytest.mark.parametrize("fields", [(), BUILTIN_FIELDS, ("path", "camera")])
def test_search_same_as_pymilvus(store: Any, monkeypatch, filter_: str, fields) -> None:
    queries = np.random.default_rng(9).standard_normal((4, DIM)).astype(np.float32).tolist()
    ours, theirs = _both(
        store,
        monkeypatch,
        lambda s: [s.search(q, limit=20, filter=filter_, output_fields=fields) for q in queries],
    )
    assert ours == theirs
    found = {hit.id for hits in ours for hit in hits}
    assert found and not found & {"i005", "i010", "i040"}
    for hit in (hit for hits in ours for hit in hits):  # i090-i096 have no camera
        assert set(fields) - ({"camera"} if hit.id >= "i090" else set()) <= set(hit.fields)


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        # deleted and unknown ids skipped
        ("", ["i088", "i041", "i033", "i092", "i000", "i077", "i096"]),
        ('camera == "cam1"', ["i041", "i033", "i077"]),  # camera = cam(i % 4)
        # A row without the field is kept by "not in", as query and search keep it
        # (upstream's get(expr=...) drops it).
        ('camera not in ["cam1"]', ["i088", "i092", "i000", "i096"]),
        ('not (camera in ["cam1"])', ["i088", "i092", "i000", "i096"]),
    ],
)
def test_rows_by_id_same_as_pymilvus(
    store: Any, monkeypatch, filter_: str, expected: list[str]
) -> None:
    ids = (88, 41, 10, 5, 33, 92, 999, 0, 77, 96)
    scored = [(f"i{i:03d}", float(i)) for i in ids]
    ours, theirs = _both(store, monkeypatch, lambda s: s.get_hits(scored, filter=filter_))
    assert ours == theirs
    assert [h.id for h in ours] == expected
    by_id = {h.id: h for h in ours}
    if not filter_:
        assert by_id["i041"].fields["size"] == 2  # the rewritten row, not the first
        assert by_id["i088"].fields["camera"] == "cam0"  # unflushed, dynamic field


@pytest.mark.parametrize("filter_", ["", 'category == "c1"', "width > 70"])
def test_iterating_rows_same_as_pymilvus(store: Any, monkeypatch, filter_: str) -> None:
    """Rows streamed in process (keys, then rows by key) equal pymilvus' query_iterator's,
    deletes, rewrites across segments and unflushed rows included."""

    def rows(s: Any) -> list[tuple[Any, ...]]:
        found = s.iter_rows(["path", "size", "camera"], filter=filter_, batch_size=7)
        return sorted((r["id"], r["path"], r["size"], r.get("camera")) for r in found)

    ours, theirs = _both(store, monkeypatch, rows)
    assert ours == theirs and len(ours) > 10
    assert not {r[0] for r in ours} & {"i005", "i010", "i040"}


def test_not_used_on_a_server_or_when_switched_off(store: Any, monkeypatch) -> None:
    assert ImageStore(uri="http://127.0.0.1:19530")._lite() is None
    monkeypatch.setenv(lite_direct.ENV_SWITCH, "0")
    assert store._lite() is None
    monkeypatch.delenv(lite_direct.ENV_SWITCH)
    assert lite_direct.collection(store.uri, "no_such_collection") is None


def test_the_caption_store_reads_in_process_too(store: Any, monkeypatch) -> None:
    from llama_index.packs.clip_hybrid.milvus.captions import CaptionStore

    captions = CaptionStore(store)
    captions.ensure(dim=DIM)
    vector = [1.0] + [0.0] * (DIM - 1)
    row = {"id": "i001", "vector": vector, "text": "a cat", "sha256": "0" * 64}
    captions.upsert([row | {"cache_key": "k", "captioner": "c", "path": "/p/1.jpg"}])
    ours, theirs = _both(
        captions, monkeypatch, lambda s: s.search(vector, limit=3, output_fields=("text",))
    )
    assert ours == theirs and [(h.id, h.fields["text"]) for h in ours] == [("i001", "a cat")]


def test_errors_are_pymilvus_errors_with_lite_messages(store: Any, monkeypatch) -> None:
    from pymilvus import MilvusException

    query = [1.0] + [0.0] * (DIM - 1)
    bad = "width >>> 3"
    for read in (
        lambda s: s.search(query, limit=3, filter=bad),
        lambda s: s.get_hits([("i001", 1.0)], filter=bad),
    ):
        with pytest.raises(MilvusException) as ours:
            read(store)
        monkeypatch.setenv(lite_direct.ENV_SWITCH, "0")
        with pytest.raises(MilvusException) as theirs:
            read(store)
        monkeypatch.delenv(lite_direct.ENV_SWITCH)
        assert "width >>> 3" in ours.value.message and "width >>> 3" in theirs.value.message
    store.client.release_collection(store.collection_name)
    reads = [
        lambda: store.client.get(store.collection_name, ids=["i001"]),  # pymilvus
        lambda: store.get_hits([("i001", 1.0)]),
        lambda: store.get_hits([("i001", 1.0)], filter='camera == "cam1"'),
        lambda: store.search(query, limit=3),
    ]
    for read in reads:
        with pytest.raises(MilvusException, match=r"released|not loaded"):
            read()


def test_a_relative_path_keeps_naming_its_database_after_chdir(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(5)
    stores = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        store = stores[name] = ImageStore(uri="./clip.db")
        store.ensure(dim=DIM)
        store.upsert([row | {"folder": name} for row in _rows(rng, range(5), 1)])
        store.flush()
    query = [1.0] + [0.0] * (DIM - 1)
    for name, store in stores.items():  # the working directory is b now
        assert store._lite() is not None
        hits = store.search(query, limit=5, output_fields=("folder",))
        assert {h.fields["folder"] for h in hits} == {name}
        assert store.get_hits([("i001", 0.0)])[0].fields["folder"] == name
    stores["a"].close()  # stops a's server, not b's
    assert len(stores["b"].search(query, limit=5)) == 5
    stores["b"].close()
