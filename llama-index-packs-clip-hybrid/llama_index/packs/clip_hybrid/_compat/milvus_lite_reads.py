"""Milvus Lite 3.2.2: searches and reads by id in process, without two upstream costs.

Two upstream problems, both measured in the README (``benchmarks/bench_query.py``):

- **The gRPC loopback.** Milvus Lite 3.2.2 is a Python engine that pymilvus reaches
  through a gRPC server it starts *in this process* (``milvus_lite.server_manager``). A
  search of 50 ids at 10k rows is ~10 ms through ``MilvusClient.search`` and ~4.7 ms
  calling the same engine's ``Collection.search``: the rest is protobuf encoding and
  decoding on both sides of a loopback socket, all of it Python holding the GIL. Reading
  10 rows by id: ~4 ms against ~1 ms.
- **A walk over every row on every search.** Lite decides per search which stored rows
  are live, in Python loops over all N rows (see :mod:`.milvus_lite_search`): ~75% of a
  ~230 ms query at 100k rows.

This module reads the store's in-process ``Collection`` directly: rows by id as
``Collection.get`` finds them, and dense searches as ``Collection.search`` runs them but
with the live-row masks cached (:mod:`.milvus_lite_search`). Nothing of Milvus Lite is
replaced: another user of Milvus Lite in the same process (or pymilvus calls of ours)
get stock Milvus Lite. Writes, schema changes and everything else go through pymilvus.
Reads run under the store's lock (``milvus/locking.py``), so they never see a flush half
done. ``tests/test_milvus_lite_reads.py`` and ``tests/test_milvus_lite_search.py`` check every read
against upstream's answer; the canaries there fail when upstream changes.

It is used with milvus-lite 3.2.2 only, the version it was written and tested against;
with another version the reads go through pymilvus (one warning says what that costs),
and with ``CLIP_HYBRID_LITE_DIRECT_READS=0`` too. Delete this module when Milvus Lite
offers an in-process client and stops walking every row (not yet reported upstream;
the report belongs at milvus-io/milvus-lite).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..redaction import package_logger
from .milvus_lite_search import columns_needed, read_rows, search_with_cached_masks

logger = package_logger(__name__)

SUPPORTED_VERSIONS = ("3.2.2",)
ENV_SWITCH = "CLIP_HYBRID_LITE_DIRECT_READS"
_warned: set[str] = set()


def active() -> bool:
    """Whether the in-process reads apply: milvus-lite is one of the tested versions and
    they are not switched off. An untested version gets one warning naming the cost."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    try:
        import milvus_lite
    except ImportError:  # a server-only install
        return False
    version = str(getattr(milvus_lite, "__version__", "unknown"))
    if version in SUPPORTED_VERSIONS:
        return True
    if version not in _warned:
        _warned.add(version)
        logger.warning(
            "milvus-lite %s is not a version clip-hybrid's in-process reads were tested on "
            "(%s): searches go through Milvus Lite's gRPC server and its walk over every "
            "row, several times slower on large collections (README: Numbers).",
            version,
            ", ".join(SUPPORTED_VERSIONS),
        )
    return False


def collection(uri: str, name: str) -> Any | None:
    """The in-process Milvus Lite ``Collection`` named ``name`` behind the local database
    ``uri``, or None: another milvus-lite version, switched off, no server for ``uri`` in
    this process yet, or no such collection (then pymilvus answers, with its errors)."""
    if not active():
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
    output_fields: list[str] | None,
    search_params: dict[str, Any],
) -> list[dict[str, Any]]:
    """One COSINE query on the ``vector`` field: hits as pymilvus returns them
    (``{"id", "distance", "entity"}``), best first.

    The dense path of upstream's ``Collection.search`` (no grouping, range, offset or
    ranker: the store uses none), with the live-row masks cached."""
    import numpy as np
    from milvus_lite.engine.collection import _convert_hits_to_milvus_distances
    from milvus_lite.engine.projection import build_projection_plan, project_record

    with _as_pymilvus_errors():
        col._require_loaded()
        field = col._resolve_anns_field("vector")
        metric = col.resolve_search_metric(field, "COSINE")
        plan = build_projection_plan(output_fields, col._schema, api_kind="search")
        compiled = col._compile_filter(filter) if filter else None
        indexed_plan = col._indexed_filter_plan(compiled)
        segments, tombstones = col._read_snapshot()
        found = search_with_cached_masks(
            np.asarray([list(vector)], dtype=np.float32),
            segments,
            col._memtable,
            tombstones,
            limit,
            metric,
            col._pk_name,
            field,
            None,
            compiled,
            output_fields,
            indexed_plan,
            lambda record: project_record(record, col._schema, plan),
            search_params,
        )
        _convert_hits_to_milvus_distances(found, metric)
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
    col: Any, ids: Sequence[str], *, expr: str, output_fields: list[str]
) -> list[dict[str, Any]]:
    """Rows by primary key (only those stored and matching ``expr``), in ``ids`` order,
    as pymilvus' ``get`` and ``query`` return them.

    ``expr`` (empty: the ids alone) is the whole filter, ``key in [...] and (condition)``
    as the caller quotes it. The rows come from ``Collection.query`` on it, the call
    pymilvus' path ends in: upstream's ``get(expr=...)`` checks the
    filter row by row with other semantics (``camera not in [...]`` drops a row without
    ``camera``, which ``query`` and ``search`` keep).

    Without a filter the rows are found as upstream's ``Collection.get`` finds them
    (memtable first, then the newest copy across segments unless a tombstone is newer)
    but read with one ``take`` of the wanted columns per segment: upstream converts every
    cell of each row, the 512 floats of its vector included (~1 ms for the 10 rows of a
    hybrid result at 10k rows, py-spy)."""
    if expr:
        with _as_pymilvus_errors():
            rows = col.query(expr, output_fields=output_fields)
        by_id = {row[col._pk_name]: row for row in rows}
        return [by_id[pk] for pk in ids if pk in by_id]
    from milvus_lite.engine.projection import build_projection_plan, project_record

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


def ids(col: Any, *, filter: str) -> list[Any]:
    """Every live key (matching ``filter``), found as upstream's ``Collection.query``
    finds them (what pymilvus' ``query_iterator`` pages through)."""
    with _as_pymilvus_errors():
        rows = col.query(filter or None, output_fields=[col._pk_name])
    return [row[col._pk_name] for row in rows]
