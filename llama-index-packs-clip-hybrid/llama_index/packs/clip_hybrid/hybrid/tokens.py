"""BM25 tokens for mixed Chinese/English text (upstream BM25 scores Chinese as all zeros).

Upstream's ``\\w\\w+`` token pattern turns a whole run of Chinese characters into one token,
so a Chinese query matches nothing (LlamaIndex #13866). Here CJK runs are segmented with
jieba (search mode: a compound also yields its parts, so 架构 finds 系统架构图) and other
text is lower-cased, split on word characters, stripped of English stopwords and stemmed
(Snowball English), so "diagrams" finds "diagram". Documents and queries go through the
same function; :data:`TOKENIZER_SETTINGS` is persisted with every index built with it.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from functools import lru_cache
from typing import Any

#: Han (incl. extension A and compatibility), kana and hangul: scripts without spaces.
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]+")
_WORD = re.compile(r"\w+", re.UNICODE)

#: What an index built with :func:`tokenize` depends on; stored with it, checked on load.
TOKENIZER_SETTINGS: dict[str, Any] = {
    "name": "clip-hybrid-cjk",
    "version": 1,
    "cjk": "jieba.cut_for_search",
    "latin": "lower, \\w+, english stopwords, snowball english",
}

_jieba_lock = threading.Lock()


@lru_cache(maxsize=1)
def _jieba() -> Any:
    with warnings.catch_warnings():  # jieba imports pkg_resources (deprecated)
        warnings.simplefilter("ignore")
        import jieba
    jieba.setLogLevel(logging.WARNING)  # it prints "Building prefix dict" otherwise
    with _jieba_lock:
        jieba.initialize()
    return jieba


def quiet_jieba() -> None:
    """Load jieba with its "Building prefix dict" chatter turned off."""
    _jieba()


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def tokenize(text: str) -> list[str]:
    """BM25 tokens of ``text``: jieba words for CJK runs, stemmed words for the rest."""
    tokens: list[str] = []
    position = 0
    for match in _CJK_RUN.finditer(text):
        tokens.extend(_latin(text[position : match.start()]))
        tokens.extend(_cjk(match.group()))
        position = match.end()
    tokens.extend(_latin(text[position:]))
    return tokens


def _latin(text: str) -> list[str]:
    if not text.strip():
        return []
    stop = _stopwords()
    words = [w for w in _WORD.findall(text.lower()) if w not in stop and not w.startswith("_")]
    return list(_stemmer().stemWords(words))


def _cjk(run: str) -> list[str]:
    return [w for w in _jieba().lcut_for_search(run) if w.strip()]
