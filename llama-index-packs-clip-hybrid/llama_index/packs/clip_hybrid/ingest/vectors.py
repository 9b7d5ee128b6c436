"""Vectors for decoded images: CLIP in batches, or any MultiModalEmbedding, and a cache of them."""

from __future__ import annotations

import io
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from PIL import Image

from .._util import chunks, unit_vector
from ..clip.embedding import FastClipEmbedding


def embed_images(
    model: MultiModalEmbedding, images: list[Image.Image], paths: Sequence[str | None]
) -> list[list[float]]:
    """Unit vectors of decoded ``images``. CLIP takes the pixels in batches; any other
    ``MultiModalEmbedding`` gets what upstream expects: the file path where there is one,
    else the decoded image as a PNG buffer."""
    if isinstance(model, FastClipEmbedding):
        return model.embed_pil_batches(chunks(images, model.embed_batch_size))
    sources: list[Any] = []
    for path, img in zip(paths, images, strict=True):
        if path:
            sources.append(path)
        else:
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            buf.seek(0)
            sources.append(buf)
    return [unit_vector(v) for v in model.get_image_embedding_batch(sources)]


#: Why an image whose vector is not a unit vector after normalising is not stored.
NOT_A_VECTOR = "the embedding model returned a zero or non-finite vector"


def is_unit(vector: Sequence[float]) -> bool:
    """Whether ``vector`` has length 1 (what every stored vector has: a zero or NaN from
    an embedder, stored, would make the index read as damaged)."""
    norm = math.sqrt(math.fsum(v * v for v in vector))
    return math.isfinite(norm) and abs(norm - 1.0) < 1e-3


class VectorCache:
    """The vectors of the last ``size`` contents (by sha256), kept as float32 (what Milvus
    stores): 2 KB each for 512 dimensions, where a list of Python floats takes 16 KB."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    def __contains__(self, digest: str) -> bool:
        return digest in self._vectors

    def get(self, digest: str) -> list[float] | None:
        vector = self._vectors.get(digest)
        return None if vector is None else vector.tolist()

    def put(self, digest: str, vector: list[float]) -> None:
        self._vectors[digest] = np.asarray(vector, dtype=np.float32)
        self._vectors.move_to_end(digest)
        while len(self._vectors) > self.size:
            self._vectors.popitem(last=False)
