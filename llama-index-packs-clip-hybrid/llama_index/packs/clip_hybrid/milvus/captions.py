"""CaptionStore: the Milvus collection of caption vectors and caption text.

One row per image (the row id is the image's id in the image collection), in the same
``uri`` as the images: Milvus holds one dense field per collection, and CLIP's 512-dim
image vectors and the captions' 1536-dim (or 384-dim offline) vectors differ.

With Milvus' own BM25 (``bm25="milvus"``) the analyzer reads ``bm25_text``: the caption
whole, then the words of its glued tokens (:func:`bm25_input`, :mod:`..words`), so
"quarterly revenue" finds an image whose OCR read "Quarterlyrevenue2023"; the caption in
``text`` stays as it was read. Collections created before that field existed analyze
``text`` itself and keep working as they did (rebuild one with ``overwrite=True``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from ..options import DEFAULT_CAPTION_COLLECTION
from ..redaction import package_logger
from ..words import glued_words, split_glued
from .collection import CollectionMismatchError, IndexConfig, Schema, VectorCollection
from .images import ImageStore

#: Fields every caption row has (besides id and vector).
CAPTION_FIELDS = ("text", "sha256", "cache_key", "captioner", "path")

#: Milvus' own analyzer for the BM25 function: jieba segments Chinese (and splits other
#: text on spaces and punctuation), then lower-case. Needs the jieba package (a dependency).
MILVUS_ANALYZER = {"tokenizer": "jieba", "filter": ["lowercase"]}
SPARSE_FIELD = "sparse"
#: What the BM25 function reads in collections made by this version: the caption with
#: glued words split (older collections analyze ``text``).
BM25_INPUT_FIELD = "bm25_text"

logger = package_logger(__name__)

BM25Backend = Literal["bm25s", "milvus"]

#: Milvus VARCHAR holds at most 65535 bytes; captions are cut to fit.
MAX_CAPTION_BYTES = 60_000


def bm25_input(caption: str) -> str:
    """What Milvus' BM25 analyzes for a caption: the caption whole, then the words of its
    glued tokens; only those extra words are cut to fit the field."""
    words = glued_words(caption)
    return fit_caption(f"{caption}\n{words}") if words else caption


def fit_caption(text: str) -> str:
    """``text`` cut (on a character boundary) to what a VARCHAR field holds."""
    data = text.encode("utf-8")
    if len(data) <= MAX_CAPTION_BYTES:
        return text
    return data[:MAX_CAPTION_BYTES].decode("utf-8", "ignore")


def _caption_schema(bm25: BM25Backend) -> Schema:
    def build(schema: Any) -> None:
        from pymilvus import DataType

        if bm25 == "milvus":
            from pymilvus import Function, FunctionType

            from .._compat.jieba_quiet import load_jieba

            load_jieba()  # Milvus Lite's analyzer runs jieba in this process
            schema.add_field("text", DataType.VARCHAR, max_length=65535)
            schema.add_field(
                BM25_INPUT_FIELD,
                DataType.VARCHAR,
                max_length=65535,
                enable_analyzer=True,
                analyzer_params=MILVUS_ANALYZER,
            )
            schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="caption_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=[BM25_INPUT_FIELD],
                    output_field_names=[SPARSE_FIELD],
                )
            )
        else:
            schema.add_field("text", DataType.VARCHAR, max_length=65535)
        schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("cache_key", DataType.VARCHAR, max_length=64)
        schema.add_field("captioner", DataType.VARCHAR, max_length=256)
        schema.add_field("path", DataType.VARCHAR, max_length=4096)

    def add_indexes(index: Any) -> None:
        if bm25 == "milvus":
            index.add_index(
                field_name=SPARSE_FIELD,
                index_name=SPARSE_FIELD,
                index_type="SPARSE_INVERTED_INDEX",
                metric_type="BM25",
            )

    return Schema(output_fields=CAPTION_FIELDS, build=build, add_indexes=add_indexes)


class CaptionStore(VectorCollection):
    """Caption vectors (COSINE) plus the text, the image's sha256 and the captioner key.

    It lives in the database of its :class:`ImageStore` (one Milvus Lite server per path
    and process) and shares its connection; closing it leaves that connection open.
    """

    model_option = "caption_embed"

    def __init__(
        self,
        images: ImageStore,
        *,
        collection_name: str = DEFAULT_CAPTION_COLLECTION,
        index: IndexConfig | None = None,
        bm25: BM25Backend = "bm25s",
    ) -> None:
        if collection_name == images.collection_name:
            raise ValueError(f"The caption collection needs its own name, not {collection_name!r}.")
        super().__init__(
            images.database,
            collection_name,
            schema=_caption_schema(bm25),
            index=index or images.index,
        )
        self.images = images
        #: Used when the collection is created: with "milvus" it gets a BM25 function
        #: (text -> sparse vector) for Milvus' own full-text search.
        self.bm25 = bm25
        self._splits_glued: bool | None = None  # see splits_glued_words()

    def retarget(self, name: str) -> None:
        super().retarget(name)
        self._splits_glued = None

    def has_milvus_bm25(self) -> bool:
        """True when the existing collection has Milvus' BM25 sparse field."""
        return SPARSE_FIELD in self.field_names()

    def splits_glued_words(self) -> bool:
        """True when Milvus' BM25 reads :data:`BM25_INPUT_FIELD` (glued words split);
        False for a collection made before it, whose BM25 reads ``text`` as it is."""
        if self._splits_glued is None:
            fields = self.field_names()
            if not fields:  # no collection yet: asked again once one is made
                return False
            self._splits_glued = BM25_INPUT_FIELD in fields
            if SPARSE_FIELD in fields and not self._splits_glued:
                logger.info(
                    "Caption collection %r at %s was made by an older version: its BM25 "
                    "does not split words that OCR glued together. Rebuild it with "
                    "ingest(..., overwrite=True) (captions come back from the cache).",
                    self.collection_name,
                    self.uri,
                )
        return self._splits_glued

    def _bm25_query(self, text: str) -> str:
        return split_glued(text) if self.splits_glued_words() else text

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write rows; where BM25 reads :data:`BM25_INPUT_FIELD`, it is filled from
        each row's text (callers never pass it)."""
        if rows and self.splits_glued_words():
            rows = [{**r, BM25_INPUT_FIELD: bm25_input(r["text"])} for r in rows]
        super().upsert(rows)

    def ensure(self, dim: int, *, model: str | None = None, overwrite: bool = False) -> None:
        super().ensure(dim, model=model, overwrite=overwrite)
        if overwrite:
            self._splits_glued = None  # made again, by this version
        if self.bm25 == "milvus" and not self.has_milvus_bm25():
            raise CollectionMismatchError(
                f"Caption collection {self.collection_name!r} at {self.uri} was created "
                "without Milvus BM25; rebuild it with ingest(..., overwrite=True) (captions "
                "come back from the caption cache, no API calls) or use bm25='bm25s'."
            )

    def drop(self) -> None:
        super().drop()
        self._splits_glued = None

    def search_bm25(self, text: str, *, limit: int) -> list[tuple[str, float]]:
        """Milvus full-text search: (image id, BM25 score), best first. Milvus Lite returns
        the score negated (as a distance); it is turned back into a positive score, which
        QueryFusionRetriever needs (it re-sorts every branch by score, descending)."""
        if not text.strip() or not self.open_existing():
            return []
        result = self.client.search(
            self.collection_name,
            data=[self._bm25_query(text)],
            anns_field=SPARSE_FIELD,
            limit=limit,
            search_params={"metric_type": "BM25"},
            output_fields=[],
        )
        hits = [(str(h["id"]), abs(float(h["distance"]))) for h in result[0]]
        return sorted(hits, key=lambda pair: pair[1], reverse=True)

    def hybrid_search(
        self, vector: list[float], text: str, *, limit: int, candidates: int = 50, k: int = 60
    ) -> list[tuple[str, float]]:
        """Server-side fusion of caption vectors and BM25 (``hybrid_search`` with
        ``RRFRanker(k)``): (image id, RRF score). Milvus ranks from 1 (its top hit adds
        1/(k+1)); LlamaIndex ranks from 0 (1/k): same order, different scores."""
        from pymilvus import AnnSearchRequest, RRFRanker

        if not self.open_existing():
            return []
        params = dict(self.index.search_params)
        requests = [
            AnnSearchRequest(
                data=[vector],
                anns_field="vector",
                param={"metric_type": "COSINE", "params": params},
                limit=candidates,
            )
        ]
        if text.strip():
            requests.append(
                AnnSearchRequest(
                    data=[self._bm25_query(text)],
                    anns_field=SPARSE_FIELD,
                    param={"metric_type": "BM25"},
                    limit=candidates,
                )
            )
        result = self.client.hybrid_search(
            self.collection_name, reqs=requests, ranker=RRFRanker(k), limit=limit
        )
        return [(str(h["id"]), float(h["distance"])) for h in result[0]]

    def text_for_sha256(self, digest: str) -> str | None:
        """A stored caption of an image with these bytes, if any."""
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not self.open_existing():
            return None
        rows = self.client.query(
            self.collection_name, filter=f'sha256 == "{digest}"', output_fields=["text"], limit=1
        )
        return str(rows[0]["text"]) if rows else None
