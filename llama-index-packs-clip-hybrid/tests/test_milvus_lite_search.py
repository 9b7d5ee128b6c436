"""Milvus Lite's dense search with cached row masks (_compat/milvus_lite_search.py) against
upstream's, which stays installed: nothing of Milvus Lite is replaced.

Real Milvus Lite in a temp dir: collections with several segments, the same keys upserted
into more than one of them, deletes, filters, dynamic fields and unflushed rows. Every
search runs twice, in process through our path and through pymilvus (stock Milvus Lite),
and must give the same hits.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.packs.clip_hybrid._compat import milvus_lite_reads

DIM = 8


def _db(tmp_path: Path) -> str:
    return str(tmp_path / "lite.db")


def _client(tmp_path: Path, index_type: str) -> Any:
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=_db(tmp_path))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("tag", DataType.INT64)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type=index_type, metric_type="COSINE")
    client.create_collection("c", schema=schema, index_params=index)
    return client


def _rows(rng: np.random.Generator, ids: list[int], version: int) -> list[dict[str, Any]]:
    vectors = rng.standard_normal((len(ids), DIM)).astype(np.float32)
    return [
        {"id": f"k{i}", "vector": v.tolist(), "tag": i % 5, "version": version}
        for i, v in zip(ids, vectors, strict=True)
    ]


def _build(client: Any, rng: np.random.Generator, tmp_path: Path) -> None:
    """Three flushed segments; keys 20-59 rewritten in later ones; 10 keys deleted."""
    client.insert("c", _rows(rng, list(range(0, 100)), 1))
    client.flush("c")
    client.upsert("c", _rows(rng, list(range(20, 60)), 2))
    client.flush("c")
    client.upsert("c", _rows(rng, list(range(40, 80)) + list(range(100, 130)), 3))
    client.delete("c", ids=[f"k{i}" for i in (3, 25, 45, 70, 101, 102, 103, 104, 105, 106)])
    _flush_and_settle(client, tmp_path)


def _flush_and_settle(client: Any, tmp_path: Path) -> None:
    """Flush, then wait for the compaction and index build Lite runs after a flush.

    They run on the collection's single background worker: until the index is attached a
    search runs brute force, and a compaction swaps the segments, so two searches either
    side of such a moment differ. Lite's own drain point (``_wait_for_bg``, "intended for
    tests") returns when that worker has finished everything queued before it.
    """
    from milvus_lite.server_manager import server_manager_instance

    client.flush("c")
    _, db, _ = server_manager_instance._servers[os.path.abspath(_db(tmp_path))]
    db.get_collection("c")._wait_for_bg(timeout=120)
    assert client.describe_index("c", "vector")["pending_index_rows"] == 0


def _lite(tmp_path: Path) -> Any:
    from milvus_lite.server_manager import server_manager_instance

    _, db, _ = server_manager_instance._servers[os.path.abspath(_db(tmp_path))]
    return db.get_collection("c")


def _plain(hits: Any) -> list[tuple[Any, float, dict[str, Any]]]:
    """Hits as comparable tuples (pymilvus repeats the key in the entity for ``*``)."""
    return [
        (
            h["id"],
            round(float(h["distance"]), 5),
            {k: v for k, v in h["entity"].items() if k != "id"},
        )
        for h in hits
    ]


def _ours(tmp_path: Path, data: list[list[float]], **kwargs: Any) -> list[Any]:
    col = _lite(tmp_path)
    params = kwargs.get("search_params", {}).get("params", {})
    return [
        _plain(
            milvus_lite_reads.search(
                col,
                query,
                limit=kwargs["limit"],
                filter=kwargs.get("filter", ""),
                output_fields=kwargs.get("output_fields"),
                search_params=params,
            )
        )
        for query in data
    ]


def _search_both(client: Any, tmp_path: Path, **kwargs: Any) -> tuple[Any, Any]:
    """Ours (in process, cached masks) and upstream's (pymilvus, stock Milvus Lite)."""
    theirs = [_plain(q) for q in client.search("c", **kwargs)]
    return _ours(tmp_path, **kwargs), theirs


@pytest.mark.parametrize("index_type", ["FLAT", "IVF_FLAT"])
def test_same_hits_as_upstream(tmp_path: Path, index_type: str) -> None:
    rng = np.random.default_rng(7)
    client = _client(tmp_path, index_type)
    _build(client, rng, tmp_path)
    assert milvus_lite_reads.active(), "the in-process reads should apply to this milvus-lite"
    params = {"metric_type": "COSINE", "params": {"nprobe": 128}}
    cases: list[dict[str, Any]] = [
        {"output_fields": ["tag"]},
        {"output_fields": ["tag", "version"]},
        {"output_fields": ["*"]},
        {"output_fields": ["id"]},
        {"output_fields": None},
        {"output_fields": ["tag"], "filter": "tag in [1, 3]"},
        {"output_fields": ["$meta"], "filter": "version == 2"},
    ]
    compared = 0
    for case in cases:
        queries = rng.standard_normal((3, DIM)).astype(np.float32).tolist()
        ours, theirs = _search_both(
            client, tmp_path, data=queries, limit=15, search_params=params, **case
        )
        assert ours == theirs, case
        compared += sum(len(q) for q in ours)
    assert compared > 50
    ids = {hit[0] for q in ours for hit in q}
    assert not ids & {"k3", "k25", "k45", "k70"}, "deleted keys must not come back"
    client.close()


def test_rewritten_keys_return_their_newest_row_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    client = _client(tmp_path, "FLAT")
    _build(client, rng, tmp_path)
    newest = client.get("c", ids=["k50"], output_fields=["vector", "version"])[0]
    (hits,) = _ours(tmp_path, [newest["vector"]], limit=200, output_fields=["version"])
    ids = [h[0] for h in hits]
    assert len(ids) == len(set(ids)) == 130 - 10
    assert hits[0][0] == "k50" and hits[0][2]["version"] == 3
    client.close()


def test_unflushed_rows_and_deletes_are_seen(tmp_path: Path) -> None:
    """With rows or deletes still in the memtable, upstream's code answers."""
    rng = np.random.default_rng(5)
    client = _client(tmp_path, "FLAT")
    _build(client, rng, tmp_path)
    _ours(tmp_path, [[1.0] * DIM], limit=5, output_fields=["version"])  # masks cached
    fresh = _rows(rng, [7], 9)
    client.upsert("c", fresh)
    client.delete("c", ids=["k8"])
    for _ in range(2):  # the second run would come from a stale cache
        (hits,) = _ours(tmp_path, [fresh[0]["vector"]], limit=130, output_fields=["version"])
        assert hits[0][0] == "k7" and hits[0][2]["version"] == 9
        assert "k8" not in {h[0] for h in hits}
    _flush_and_settle(client, tmp_path)
    ours, theirs = _search_both(
        client, tmp_path, data=[fresh[0]["vector"]], limit=130, output_fields=["version"]
    )
    assert ours == theirs
    assert "k8" not in {h[0] for h in ours[0]}
    client.close()


def test_upstream_walks_every_row_on_every_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Canary: the upstream cost the cached masks remove, one tombstone check per stored
    row per search. When this fails because upstream stopped walking, delete
    _compat/milvus_lite_search.py."""
    from milvus_lite.storage.delta_index import DeltaIndex

    rng = np.random.default_rng(11)
    client = _client(tmp_path, "FLAT")
    _build(client, rng, tmp_path)
    calls = {"n": 0}
    original = DeltaIndex.is_deleted

    def counting(self: DeltaIndex, pk: Any, seq: int) -> bool:
        calls["n"] += 1
        return original(self, pk, seq)

    monkeypatch.setattr(DeltaIndex, "is_deleted", counting)
    query = [random.Random(1).random() for _ in range(DIM)]
    client.search("c", data=[query], limit=5)  # upstream's search, through pymilvus
    client.search("c", data=[query], limit=5)
    live_keys = 130 - 10
    assert calls["n"] >= 2 * live_keys  # every key's newest row, on every search

    _ours(tmp_path, [query], limit=5)  # the masks are computed once
    calls["n"] = 0
    first = _ours(tmp_path, [query], limit=5)
    second = _ours(tmp_path, [query], limit=5)
    assert calls["n"] == 0
    assert first == second
    client.close()


def test_switched_off_by_environment_or_an_untested_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import milvus_lite

    client = _client(tmp_path, "FLAT")
    assert milvus_lite_reads.collection(_db(tmp_path), "c") is not None
    monkeypatch.setenv(milvus_lite_reads.ENV_SWITCH, "0")
    assert milvus_lite_reads.collection(_db(tmp_path), "c") is None
    monkeypatch.delenv(milvus_lite_reads.ENV_SWITCH)
    monkeypatch.setattr(milvus_lite, "__version__", "3.9.0")
    with caplog.at_level("WARNING"):
        assert milvus_lite_reads.collection(_db(tmp_path), "c") is None
        assert milvus_lite_reads.collection(_db(tmp_path), "c") is None
    warnings = [r for r in caplog.records if "3.9.0" in r.getMessage()]
    assert len(warnings) == 1 and "slower" in warnings[0].getMessage()  # once, with the cost
    client.close()


def test_a_program_using_milvus_lite_itself_gets_stock_milvus_lite(tmp_path: Path) -> None:
    """Using the pack's stores replaces nothing in Milvus Lite, pymilvus or gRPC: no module
    attribute, no class attribute, no logger filter or level."""
    import logging
    import sys

    from llama_index.packs.clip_hybrid import ImageStore

    prefixes = ("milvus_lite", "pymilvus", "grpc")

    def surface() -> dict[tuple[str, str], int]:
        seen: dict[tuple[str, str], int] = {}
        for name, module in list(sys.modules.items()):
            if not name.startswith(prefixes) or module is None:
                continue
            for attr, value in list(vars(module).items()):
                seen[(name, attr)] = id(value)
                if isinstance(value, type) and value.__module__ == name:
                    for member, inner in list(vars(value).items()):
                        seen[(f"{name}.{attr}", member)] = id(inner)
        for name in list(logging.Logger.manager.loggerDict):
            if name.startswith(prefixes):
                log = logging.getLogger(name)
                seen[("logger", name)] = hash((log.level, tuple(map(id, log.filters))))
        return seen

    client = _client(tmp_path, "FLAT")  # the program's own Milvus Lite use
    client.close()
    before = surface()
    store = ImageStore(uri=str(tmp_path / "pack.db"))
    store.ensure(dim=DIM)
    store.upsert(
        [
            {"id": f"i{i}", "vector": [1.0] + [0.0] * (DIM - 1), "path": f"/p/{i}"}
            | {"sha256": "0" * 64, "folder": "/p", "category": "p", "width": 1, "height": 1}
            | {"size": 1, "mtime": 0.0}
            for i in range(3)
        ]
    )
    store.flush()
    assert len(store.search([1.0] + [0.0] * (DIM - 1), limit=2)) == 2
    assert len(list(store.iter_rows(["path"]))) == 3
    after = surface()
    changed = {key for key in before.keys() & after.keys() if before[key] != after[key]}
    assert changed == set()
    store.close()


def test_store_search_without_fields_reads_ids_only(tmp_path: Path) -> None:
    """An empty field list means "every field, vectors included" to Milvus Lite and
    "none" to a server; the store asks for the key alone, as the fusion's branches want."""
    from llama_index.packs.clip_hybrid import ImageStore

    store = ImageStore(uri=str(tmp_path / "s.db"))
    store.ensure(dim=DIM)
    rng = np.random.default_rng(2)
    rows = []
    for i, v in enumerate(rng.standard_normal((5, DIM)).astype(np.float32)):
        rows.append(
            {"id": f"i{i}", "vector": (v / np.linalg.norm(v)).tolist(), "path": f"/p/{i}.jpg"}
            | {"sha256": "0" * 64, "folder": "/p", "category": "p", "width": 1, "height": 1}
            | {"size": 1, "mtime": 0.0}
        )
    store.upsert(rows)
    store.flush()
    bare = store.search(rows[0]["vector"], limit=3, output_fields=())
    assert len(bare) == 3 and bare[0].id == "i0"
    assert all(h.fields == {} for h in bare)
    full = store.search(rows[0]["vector"], limit=3)
    assert full[0].fields["path"] == "/p/0.jpg" and "vector" not in full[0].fields
    store.close()


def test_the_store_flushes_milvus_lite_every_lite_flush_rows(tmp_path: Path) -> None:
    """Rows written since Lite's last flush live in its in-memory memtable (store.py,
    LITE_FLUSH_ROWS): the store flushes once that many rows were upserted or deleted."""
    from llama_index.packs.clip_hybrid import ImageStore
    from milvus_lite.server_manager import server_manager_instance

    uri = str(tmp_path / "s.db")
    store = ImageStore(uri=uri)
    store.ensure(dim=DIM)
    store.lite_flush_rows = 5
    _, db, _ = server_manager_instance._servers[os.path.abspath(uri)]
    memtable = lambda: db.get_collection(store.collection_name)._memtable.size()  # noqa: E731
    rng = np.random.default_rng(3)

    def rows(start: int, count: int) -> list[dict[str, Any]]:
        vectors = rng.standard_normal((count, DIM)).astype(np.float32)
        return [
            {"id": f"i{start + i}", "vector": (v / np.linalg.norm(v)).tolist()}
            | {"path": f"/p/{start + i}.jpg", "sha256": "0" * 64, "folder": "/p"}
            | {"category": "p", "width": 1, "height": 1, "size": 1, "mtime": 0.0}
            for i, v in enumerate(vectors)
        ]

    store.upsert(rows(0, 3))
    assert memtable() == 3
    store.upsert(rows(3, 3))  # 6 >= 5: flushed
    assert memtable() == 0
    store.delete(["i0", "i1"])
    store.upsert(rows(6, 2))
    assert memtable() > 0  # 4 since the flush
    store.delete(["i2"])  # 5: flushed
    assert memtable() == 0
    assert store.count() == 5
    store.close()
    assert ImageStore(uri="http://127.0.0.1:19530").lite_flush_rows == 0  # a server: never
