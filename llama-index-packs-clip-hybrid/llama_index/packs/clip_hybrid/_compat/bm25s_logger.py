"""Workaround: bm25s sets its own logger to DEBUG when it is imported (bm25s 0.3.16).

An application that configures logging (``basicConfig(level=INFO)``, say) then prints
"Building index from IDs objects" and more on every BM25 build, from a library it never
asked to be verbose. :func:`quiet_bm25s_logger` lowers that one logger to WARNING unless
it was already set to WARNING or above; the root logger and every other one are left as
they are. Canary: ``tests/test_hybrid.py::test_upstream_bm25s_sets_its_logger_to_debug``
shows the upstream behaviour; delete this module when that test fails.
"""

from __future__ import annotations

import logging


def quiet_bm25s_logger() -> None:
    """Put bm25s' logger back to WARNING when its import left it below that."""
    bm25s_logger = logging.getLogger("bm25s")
    if bm25s_logger.level < logging.WARNING:
        bm25s_logger.setLevel(logging.WARNING)
