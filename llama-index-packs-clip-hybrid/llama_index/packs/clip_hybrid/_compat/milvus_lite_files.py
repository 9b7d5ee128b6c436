"""Milvus Lite 3.2's files on disk: which ones are damaged (changed outside Milvus Lite).

Milvus Lite keeps a collection under ``<db>/collections/<name>/``: ``manifest.json`` lists
its Parquet data files. What it does with damage, measured on 3.2.2:

- a ``manifest.json`` that is not JSON: it silently reads ``manifest.json.prev``, the
  state before the last save (the rows written last are missing; an index of one save
  looks empty);
- a data file whose pages cannot be decoded: every load fails with "Couldn't
  deserialize thrift", naming no file;
- bytes changed inside the values of a data file: nothing fails, and the vectors are
  garbage (norms of ~3e11 seen), served as results.

This module names the damaged files and rows so that the store can say which and how to
recover (``milvus/collection.py``). It knows the on-disk layout of the versions in
:data:`SUPPORTED_VERSIONS` only; elsewhere it reports nothing. Canary:
``tests/test_durability.py`` checks the layout it relies on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .milvus_lite_reads import SUPPORTED_VERSIONS, active
from .milvus_lite_search import live_masks

#: How far from 1 a stored unit vector's norm may be (float32 rounding is ~1e-7).
NORM_TOLERANCE = 1e-3


def _collection_dir(uri: str, name: str) -> Path:
    return Path(uri) / "collections" / name


def damaged_manifest(uri: str, name: str) -> str | None:
    """The path of the collection's manifest when it is not valid JSON, else None."""
    manifest = _collection_dir(uri, name) / "manifest.json"
    if not active() or not manifest.is_file():
        return None
    try:
        json.loads(manifest.read_text())
    except (OSError, ValueError):
        return str(manifest)
    return None


def damaged_data_files(uri: str, name: str) -> list[str]:
    """The collection's data files (as its manifest lists them) that cannot be read whole."""
    import pyarrow.parquet as pq

    root = _collection_dir(uri, name)
    if not active():
        return []
    for manifest in (root / "manifest.json", root / "manifest.json.prev"):
        try:
            listed = json.loads(manifest.read_text())
            break
        except (OSError, ValueError):
            continue
    else:
        return []
    damaged = []
    for partition, info in (listed.get("partitions") or {}).items():
        for rel in [*info.get("data_files", []), *info.get("delta_files", [])]:
            path = root / "partitions" / partition / rel
            try:
                pq.read_table(path)
            except Exception:
                damaged.append(str(path))
    return damaged


def damaged_vectors(col: Any, field: str = "vector") -> dict[str, list[Any]]:
    """Rows whose stored vector is not a finite unit vector, by data file: file -> keys.

    Only for collections of unit vectors (ours); reads the vectors Milvus Lite holds in
    memory for its loaded segments (no disk read)."""
    if not active():
        return {}
    segments, tombstones = col._read_snapshot()
    segments = [s for s in segments if s.num_rows > 0]
    live = live_masks(col._memtable, segments, tombstones)  # superseded copies don't count
    out: dict[str, list[Any]] = {}
    for segment, alive in zip(segments, live, strict=True):
        vectors, _valid = segment.vector_data(field)
        matrix = np.asarray(vectors, dtype=np.float32)
        if not matrix.size:
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
        bad = ~np.isfinite(norms) | (np.abs(norms - 1.0) > NORM_TOLERANCE)
        if alive is not None:
            bad &= alive
        if bad.any():
            keys = [segment.pks[i] for i in np.flatnonzero(bad)]
            out[str(getattr(segment, "file_path", "?"))] = keys
    return out


__all__ = ["SUPPORTED_VERSIONS", "damaged_data_files", "damaged_manifest", "damaged_vectors"]
