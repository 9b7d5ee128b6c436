"""The store's Milvus Lite reads without gRPC (lite_direct.py) against pymilvus' answers.

Real Milvus Lite in a temp dir: rows upserted across flushes, rewritten, deleted, some
still unflushed, with dynamic metadata. Every read runs through the in-process collection
and through pymilvus (the module switched off) and must give the same hits and rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.packs.clip_hybrid import ImageStore, lite_direct
from llama_index.packs.clip_hybrid.store import BUILTIN_FIELDS

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


@pytest.fixture
def store(tmp_path: Path) -> Any:
    rng = np.random.default_rng(4)
    store = ImageStore(uri=str(tmp_path / "direct.db"))
    store.ensure(dim=DIM)
    store.upsert(_rows(rng, range(0, 80), 1))
    store.flush()
    store.upsert(_rows(rng, range(30, 60), 2))  # rewritten in a second segment
    store.flush()
    store.delete(["i005", "i040"])
    store.flush()
    store.upsert(_rows(rng, range(75, 90), 3))  # unflushed: still in the memtable
    store.delete(["i010"])
    yield store
    store.close()


def _both(store: Any, monkeypatch: pytest.MonkeyPatch, read: Any) -> tuple[Any, Any]:
    """``read(store)`` in-process (pymilvus' search and get made to fail meanwhile, so a
    silent fallback cannot pass) and through pymilvus."""
    assert store._lite_collection() is not None, "direct reads should be active here"
    client = store.client

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("went through pymilvus")

    with monkeypatch.context() as patch:
        for name in ("search", "get", "query"):
            patch.setattr(client, name, refuse)
        ours = read(store)
    with monkeypatch.context() as patch:
        patch.setenv(lite_direct.ENV_SWITCH, "0")
        assert store._lite_collection() is None
        theirs = read(store)
    return ours, theirs


@pytest.mark.parametrize(
    "filter_", ["", 'category == "c1"', 'camera in ["cam0", "cam2"]', "width > 70"]
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
    if fields:
        assert all(set(fields) <= set(hit.fields) for hits in ours for hit in hits)


@pytest.mark.parametrize("filter_", ["", 'camera == "cam1"'])
def test_rows_by_id_same_as_pymilvus(store: Any, monkeypatch, filter_: str) -> None:
    scored = [(f"i{i:03d}", float(i)) for i in (88, 41, 10, 5, 33, 999, 0, 77)]
    ours, theirs = _both(store, monkeypatch, lambda s: s.get_hits(scored, filter=filter_))
    assert ours == theirs
    expected = ["i088", "i041", "i033", "i000", "i077"]  # deleted and unknown ids skipped
    if filter_:
        expected = ["i041", "i033", "i077"]  # camera = cam(i % 4)
    assert [h.id for h in ours] == expected
    by_id = {h.id: h for h in ours}
    if not filter_:
        assert by_id["i041"].fields["size"] == 2  # the rewritten row, not the first
        assert by_id["i088"].fields["camera"] == "cam0"  # unflushed, dynamic field


def test_not_used_on_a_server_or_when_switched_off(store: Any, monkeypatch) -> None:
    assert ImageStore(uri="http://127.0.0.1:19530")._lite_collection() is None
    monkeypatch.setenv(lite_direct.ENV_SWITCH, "0")
    assert store._lite_collection() is None
    monkeypatch.delenv(lite_direct.ENV_SWITCH)
    assert lite_direct.collection(store.uri, "no_such_collection") is None


def test_the_caption_store_reads_in_process_too(store: Any, monkeypatch) -> None:
    from llama_index.packs.clip_hybrid.caption_store import CaptionStore

    captions = CaptionStore(store)
    captions.ensure(dim=DIM)
    vector = [1.0] + [0.0] * (DIM - 1)
    row = {"id": "i001", "vector": vector, "text": "a cat", "sha256": "0" * 64}
    captions.upsert([row | {"cache_key": "k", "captioner": "c", "path": "/p/1.jpg"}])
    ours, theirs = _both(
        captions, monkeypatch, lambda s: s.search(vector, limit=3, output_fields=("text",))
    )
    assert ours == theirs and [(h.id, h.fields["text"]) for h in ours] == [("i001", "a cat")]
