"""BM25 tokens for mixed Chinese/English text (upstream BM25 scores Chinese as all zeros).

Upstream's ``\\w\\w+`` token pattern turns a whole run of Chinese characters into one token,
so a Chinese query matches nothing (LlamaIndex #13866). Here CJK runs are segmented with
jieba (search mode: a compound also yields its parts, so 架构 finds 系统架构图) and other
text is lower-cased, split on word characters, stripped of English stopwords and stemmed
(Snowball English), so "diagrams" finds "diagram". A token that OCR glued together
("Quarterlyrevenue2023") is kept and followed by its words (:func:`..words.glued_parts`), so
"quarterly revenue 2023" finds it. Documents and queries go through the same function;
:data:`TOKENIZER_SETTINGS` is persisted with every index built with it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from .._compat.jieba_quiet import load_jieba
from ..words import SPLITTER_VERSION, VOCABULARY_SIZE, glued_parts

#: Han (incl. extension A and compatibility), kana and hangul: scripts without spaces.
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]+")
_WORD = re.compile(r"\w+", re.UNICODE)

#: What an index built with :func:`tokenize` depends on; stored with it, checked on load.
TOKENIZER_SETTINGS: dict[str, Any] = {
    "name": "clip-hybrid-cjk",
    "version": 2,
    "cjk": "jieba.cut_for_search",
    "latin": "\\w+, each glued token followed by its words, lower, english stopwords, "
    "snowball english",
    "glued": f"wordsegment unigrams, top {VOCABULARY_SIZE}, v{SPLITTER_VERSION}",
}


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
    words: list[str] = []
    for token in _WORD.findall(text):
        words.append(token.lower())
        words += glued_parts(token)  # [] for a token that is one word
    words = [w for w in words if w not in stop and not w.startswith("_")]
    return list(_stemmer().stemWords(words))


def _cjk(run: str) -> list[str]:
    return [w for w in load_jieba().lcut_for_search(run) if w.strip()]


def query_terms(query: str) -> list[str]:
    """The words of a query as typed (CJK runs segmented), longest first: what a page
    marks in a caption to show why it matched."""
    words: list[str] = []
    for part in re.split(r"\s+", query.strip()):
        if _CJK_RUN.search(part):
            words += [w for w in load_jieba().lcut_for_search(part) if w.strip()]
        elif len(part) > 1:
            words.append(part)
    return sorted(set(words), key=len, reverse=True)
