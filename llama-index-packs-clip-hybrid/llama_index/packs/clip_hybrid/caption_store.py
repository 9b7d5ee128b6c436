"""CaptionStore: the Milvus collection of caption vectors and caption text.

One row per image (the row id is the image's id in the image collection), in the same
``uri`` as the images: Milvus holds one dense field per collection, and CLIP's 512-dim
image vectors and the captions' 1536-dim (or 384-dim offline) vectors differ.
"""

from __future__ import annotations

from typing import Any

from .store import ImageStore, IndexConfig

DEFAULT_CAPTION_COLLECTION = "captions"

#: Fields every caption row has (besides id and vector).
CAPTION_FIELDS = ("text", "sha256", "cache_key", "captioner", "path")

#: Milvus VARCHAR holds at most 65535 bytes; captions are cut to fit.
MAX_CAPTION_BYTES = 60_000


def fit_caption(text: str) -> str:
    """``text`` cut (on a character boundary) to what a VARCHAR field holds."""
    data = text.encode("utf-8")
    if len(data) <= MAX_CAPTION_BYTES:
        return text
    return data[:MAX_CAPTION_BYTES].decode("utf-8", "ignore")


class CaptionStore(ImageStore):
    """Caption vectors (COSINE) plus the text, the image's sha256 and the captioner key.

    It shares the connection of its :class:`ImageStore` (one Milvus Lite server per path
    and process); closing it leaves that connection open.
    """

    def __init__(
        self,
        images: ImageStore,
        *,
        collection_name: str = DEFAULT_CAPTION_COLLECTION,
        index: IndexConfig | None = None,
    ) -> None:
        if collection_name == images.collection_name:
            raise ValueError(f"The caption collection needs its own name, not {collection_name!r}.")
        super().__init__(
            uri=images.uri, collection_name=collection_name, index=index or images.index
        )
        self.images = images

    def __repr__(self) -> str:
        return f"CaptionStore(uri={self.uri!r}, collection_name={self.collection_name!r})"

    @property
    def client(self) -> Any:
        return self.images.client

    def close(self) -> None:
        self._ready = False

    def search_captions(self, vector: list[float], *, limit: int, filter: str = "") -> list[Any]:
        return self.search(vector, limit=limit, filter=filter, output_fields=CAPTION_FIELDS)

    def text_for_sha256(self, digest: str) -> str | None:
        """A stored caption of an image with these bytes, if any."""
        if not self.open_existing():
            return None
        rows = self.client.query(
            self.collection_name, filter=f'sha256 == "{digest}"', output_fields=["text"], limit=1
        )
        return str(rows[0]["text"]) if rows else None

    def _schema(self, dim: int) -> Any:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("text", DataType.VARCHAR, max_length=65535)
        schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("cache_key", DataType.VARCHAR, max_length=64)
        schema.add_field("captioner", DataType.VARCHAR, max_length=256)
        schema.add_field("path", DataType.VARCHAR, max_length=4096)
        return schema
