"""Milvus Lite 3.2.2 reads without the gRPC loopback.

The upstream problem: Milvus Lite 3.2.2 is a Python engine that pymilvus reaches through a
gRPC server it starts *in this process* (``milvus_lite.server_manager``). A search of 50
ids at 10k rows is ~10 ms through ``MilvusClient.search`` and ~4.7 ms calling the same
engine's ``Collection.search`` (``/tmp`` script, both in one run): the rest is protobuf
encoding and decoding on both sides of a loopback socket, all of it Python holding the
GIL. Reading 10 rows by id: ~4 ms against ~1 ms. Because the gRPC half holds the GIL, the
CLIP and caption-vector branches of a hybrid query cannot overlap either.

This module hands the store that in-process ``Collection`` for its reads (``search`` and
reads by id). They are the calls the gRPC servicer makes for the same request, on the same
object, so they see the same rows; ``tests/test_lite_direct.py`` checks that both paths
give the same hits and rows (filters, dynamic fields, deletes, unflushed rows). Writes,
schema changes and everything else still go through pymilvus.

It is used with milvus-lite 3.2.2 only, the version it was written and tested against,
and only when pymilvus started this process's server for the path (it does on the
store's first call). Otherwise, or with ``CLIP_HYBRID_LITE_DIRECT_READS=0``, reads go
through pymilvus. Delete this module when Milvus Lite offers an in-process client (not
yet reported upstream: this machine cannot reach GitHub; the report belongs at
milvus-io/milvus-lite with the numbers above).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .._util import milvus_lite_workaround_on

SUPPORTED_VERSIONS = ("3.2.2",)
ENV_SWITCH = "CLIP_HYBRID_LITE_DIRECT_READS"


def collection(uri: str, name: str) -> Any | None:
    """The in-process Milvus Lite ``Collection`` named ``name`` behind the local database
    ``uri``, or None: another milvus-lite version, switched off, no server for ``uri`` in
    this process yet, or no such collection (then pymilvus answers, with its errors)."""
    if not milvus_lite_workaround_on(ENV_SWITCH, SUPPORTED_VERSIONS):
        return None
    from milvus_lite.server_manager import server_manager_instance

    entry = getattr(server_manager_instance, "_servers", {}).get(os.path.abspath(uri))
    if entry is None:
        return None
    try:
        return entry[1].get_collection(name)
    except Exception:  # dropped meanwhile, database closed: pymilvus reports it
        return None


def search(
    col: Any,
    vector: Sequence[float],
    *,
    limit: int,
    filter: str,
    output_fields: list[str],
    search_params: dict[str, Any],
) -> list[dict[str, Any]]:
    """One COSINE query on the ``vector`` field: hits as pymilvus returns them
    (``{"id", "distance", "entity"}``), best first."""
    with _as_pymilvus_errors():
        found = col.search(
            [list(vector)],
            top_k=limit,
            metric_type="COSINE",
            expr=filter or None,
            output_fields=output_fields,
            anns_field="vector",
            search_params=search_params,
        )
    return list(found[0]) if found else []


@contextmanager
def _as_pymilvus_errors() -> Iterator[None]:
    """Lite's own exceptions (a bad filter, a released collection) raised as the
    ``MilvusException`` that pymilvus raises for them, with the same message."""
    from milvus_lite.exceptions import MilvusLiteError
    from pymilvus import MilvusException

    try:
        yield
    except MilvusLiteError as exc:
        raise MilvusException(message=str(exc)) from exc


def get(
    col: Any, ids: Sequence[str], *, filter: str, output_fields: list[str]
) -> list[dict[str, Any]]:
    """Rows by primary key (only those stored and matching ``filter``), in ``ids`` order,
    as pymilvus' ``get`` and ``query`` return them.

    With a filter the rows come from ``Collection.query`` on ``key in [...] and
    (filter)``, the call pymilvus' path ends in: upstream's ``get(expr=...)`` checks the
    filter row by row with other semantics (``camera not in [...]`` drops a row without
    ``camera``, which ``query`` and ``search`` keep).

    Without a filter the rows are found as upstream's ``Collection.get`` finds them
    (memtable first, then the newest copy across segments unless a tombstone is newer)
    but read with one ``take`` of the wanted columns per segment: upstream converts every
    cell of each row, the 512 floats of its vector included (~1 ms for the 10 rows of a
    hybrid result at 10k rows, py-spy)."""
    if filter:
        expr = f"{col._pk_name} in {json.dumps(list(ids), ensure_ascii=False)} and ({filter})"
        with _as_pymilvus_errors():
            rows = col.query(expr, output_fields=output_fields)
        by_id = {row[col._pk_name]: row for row in rows}
        return [by_id[pk] for pk in ids if pk in by_id]
    from milvus_lite.engine.projection import build_projection_plan, project_record

    from .milvus_lite_search import columns_needed, read_rows

    with _as_pymilvus_errors():
        col._require_loaded()  # a released collection fails as through pymilvus
    plan = build_projection_plan(output_fields, col._schema, api_kind="get")
    # The memtable before the snapshot (upstream reads it after): a flush swaps in an
    # empty memtable before it adds the flushed segment, and this order narrows the
    # window in which a read sees neither copy of the flushed rows.
    memtable = col._memtable
    segments, tombstones = col._read_snapshot()
    found: dict[str, dict[str, Any]] = {}
    picks: list[tuple[str, int, int]] = []
    for pk in dict.fromkeys(ids):
        record = memtable.get(pk)
        if record is not None:
            found[pk] = record
            continue
        if memtable.is_locally_deleted(pk):
            continue
        best_seq, best = -1, None
        for source, segment in enumerate(segments):
            row = segment.find_row(pk)
            if row is not None and int(segment.seqs[row]) > best_seq:
                best_seq, best = int(segment.seqs[row]), (source, row)
        if best is not None and not tombstones.is_deleted(pk, best_seq):
            picks.append((pk, *best))
    if picks:
        wanted = columns_needed(output_fields, col._pk_name, segments[0].table.schema.names)
        rows = read_rows(segments, [(source, row) for _, source, row in picks], wanted)
        found.update((pk, row) for (pk, _, _), row in zip(picks, rows, strict=True))
    return [project_record(found[pk], col._schema, plan) for pk in ids if pk in found]
