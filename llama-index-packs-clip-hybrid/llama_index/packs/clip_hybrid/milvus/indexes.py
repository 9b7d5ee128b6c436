"""The ANN index of a collection and when Milvus Lite flushes: for Lite, and for a server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IndexConfig:
    """The ANN index and its search parameters."""

    index_type: str
    params: tuple[tuple[str, Any], ...] = ()
    search_params: tuple[tuple[str, Any], ...] = ()


#: Milvus Lite: IVF_FLAT with nprobe = nlist scans every cluster, so top-k is exact
#: (recall 1.0) and the index builds in seconds (HNSW takes ~200 s at 100k, searching by
#: brute force meanwhile). Lite's own per-query walk over every row is skipped
#: (_compat/milvus_lite_search.py), so FAISS is most of a query: ~25 ms of ~45 at 100k.
#: nlist is Lite's default 128: Lite drops build parameters passed the usual way (it reads
#: only a nested "params" key), so none are passed.
LITE_INDEX = IndexConfig("IVF_FLAT", params=(), search_params=(("nprobe", 128),))

#: A Milvus server or cluster: HNSW, the usual choice for CLIP-sized vectors at scale.
SERVER_INDEX = IndexConfig(
    "HNSW", params=(("M", 16), ("efConstruction", 200)), search_params=(("ef", 128),)
)

#: Milvus Lite holds the rows written since its last flush in memory (Arrow batches and a
#: Python index entry per key), flushes on its own only at 128 MB (~50k image rows), and
#: reads (get, query, search) go through those rows one by one. Upserting 10k rows as
#: ingestion does, 64 at a time: 661 MB of RSS after the final flush and 72 s without
#: flushes, 502 MB and 26 s with one every 2,048 rows (a store-only /tmp script, both in
#: one run). A server manages its own segments: nothing is flushed there until the end of
#: a write.
LITE_FLUSH_ROWS = 2048
