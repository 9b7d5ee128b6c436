"""Searching: odd text queries give results, empty and unreadable ones a clear error."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from llama_index.packs.clip_hybrid import ClipHybridPack, DatabaseBusyError
from llama_index.packs.clip_hybrid.hybrid.bm25 import CaptionBM25Index, CaptionText
from llama_index.packs.clip_hybrid.testing.bad_images import make_odd_images
from PIL import Image


@pytest.mark.parametrize(
    "query",
    ["x" * 10_000, "🐱🚀 ✨", "系统架构图", "مرحبا بالعالم", "שלום עולם", "a\u200bb\u0000c"],
)
def test_odd_text_queries_give_results(pack, image_dir, query) -> None:
    pack.ingest(image_dir)
    hits = pack.search(query, mode="text", similarity_top_k=3).hits
    assert len(hits) == 3 and all(-1.0 <= h.score <= 1.0 for h in hits)


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_queries_are_a_clear_error(pack, image_dir, query) -> None:
    pack.ingest(image_dir)
    with pytest.raises(ValueError, match="query is empty"):
        pack.search(query, mode="text")


def test_an_image_query_that_is_not_an_image_is_a_clear_error(pack, image_dir, tmp_path) -> None:
    pack.ingest(image_dir)
    page = tmp_path / "page.jpg"
    page.write_text("<html>not an image</html>")
    for query in (page, page.read_bytes()):
        with pytest.raises(ValueError, match=r"Query image .* cannot be read as an image"):
            pack.search(query, mode="image")
    with pytest.raises(FileNotFoundError, match=r"missing\.png does not exist"):
        pack.search(tmp_path / "missing.png", mode="image")
