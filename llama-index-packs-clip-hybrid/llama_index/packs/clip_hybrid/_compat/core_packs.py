"""Workaround: LlamaIndex core removed its pack base class (PR #21276, core 0.14.21).

``BaseLlamaPack`` (``get_modules()``, ``run()``) was deprecated and removed with
``llama_index.core.llama_pack``; packs now carry the workflow themselves. On a core
that still has it (<= 0.14.20) ``ClipHybridPack`` subclasses it, so ``isinstance`` checks
of older code hold; on newer cores it is a plain class with the same two methods.
``tests/test_download.py`` shows which core is installed. Delete this module when the
supported cores all lack the class.
"""

from __future__ import annotations

import importlib
from typing import Any


def pack_base() -> Any:
    """``BaseLlamaPack`` on cores that still have it, else ``object``."""
    try:
        return importlib.import_module("llama_index.core.llama_pack").BaseLlamaPack
    except (ImportError, AttributeError):
        return object
