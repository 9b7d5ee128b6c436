"""Workaround: jieba announces itself, and warns about a deprecated import, on first use.

jieba 0.42.1 imports ``pkg_resources`` (a DeprecationWarning/UserWarning with setuptools
81) and prints "Building prefix dict from the default dictionary ..." through its own
logger at DEBUG, with a handler of its own, when it first segments text. Both are noise
for a search. :func:`load_jieba` imports it without the warning and lowers its logger
to WARNING through ``jieba.setLogLevel`` (its public switch for exactly this), once.
Delete this module when jieba stops doing either (``tests/test_hybrid.py`` shows it).
"""

from __future__ import annotations

import logging
import threading
import warnings
from functools import lru_cache
from typing import Any

_lock = threading.Lock()


@lru_cache(maxsize=1)
def load_jieba() -> Any:
    """The ``jieba`` module, initialised, without its warning and its chatter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import jieba
    jieba.setLogLevel(logging.WARNING)
    with _lock:
        jieba.initialize()
    return jieba
