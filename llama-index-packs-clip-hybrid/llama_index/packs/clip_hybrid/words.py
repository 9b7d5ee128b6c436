"""Words that OCR glued together, split again ("Quarterlyrevenue2023" -> quarterly revenue 2023).

OCR drops the spaces of bold or tightly set text, and BM25 then sees one unknown token
that no query matches. :func:`glued_parts` splits a token at letter/digit and
lower/upper-case boundaries, then splits each run of letters into the most probable
sequence of English words (Viterbi over the unigram counts of the Google Web Trillion
Word Corpus that the ``wordsegment`` package ships, Apache-2.0; an unknown piece costs
more the longer it is, as in Peter Norvig's segmenter). A token that is already a word
("information", "together") stays whole, and so does text in other scripts. Both BM25
backends use it: ``hybrid.tokens`` on its tokens, the Milvus caption collection through
:func:`split_glued` on the text its analyzer reads. The caption itself is never changed.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

#: Bump when the splitting changes: stored with every index whose tokens depend on it.
SPLITTER_VERSION = 2
#: The most frequent words kept from the list (it holds 333k; the rarest are mostly
#: fragments and typos that split real words into junk).
VOCABULARY_SIZE = 100_000
#: Longest word tried in a split; longer tokens are left as they are past this many letters.
_MAX_WORD = 24
_MAX_TOKEN = 80

_WORD = re.compile(r"\w+")
#: Latin letters, accented ones included: one run, so "Zürich" or "résumé" stays a word.
_LATIN = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff"
#: Runs of Latin letters, of other letters (Cyrillic, CJK, ...), and of digits.
_RUN = re.compile(rf"[{_LATIN}]+|[^\W\d_{_LATIN}]+|\d+")
#: An ASCII letter run's words at lower->upper case changes ("totalRevenue").
_CASE = re.compile(r"[A-Z]*[a-z]+|[A-Z]+(?![a-z])")


@lru_cache(maxsize=1)
def _costs() -> tuple[dict[str, float], float]:
    """-log10 P(word) of the :data:`VOCABULARY_SIZE` most frequent words, and log10 of
    the corpus size (what an unknown piece costs per letter, from there)."""
    from importlib.resources import files

    import wordsegment  # only its data file is read (importing it loads nothing)

    counts: dict[str, int] = {}
    text = files(wordsegment).joinpath("unigrams.txt").read_text(encoding="utf-8")
    for line in text.splitlines()[:VOCABULARY_SIZE]:
        word, _, count = line.partition("\t")
        counts[word] = int(count)
    total = math.log10(1_024_908_267_229)  # the corpus' token count (wordsegment.TOTAL)
    return {w: total - math.log10(c) for w, c in counts.items()}, total


def _unknown_cost(piece: str, total: float) -> float:
    return total - 1.0 + len(piece)


@lru_cache(maxsize=65_536)
def _segment(letters: str) -> tuple[str, ...]:
    """The most probable words of a lower-case ASCII letter run (Viterbi)."""
    costs, total = _costs()
    n = len(letters)
    best = [0.0] + [math.inf] * n
    back = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - _MAX_WORD), end):
            piece = letters[start:end]
            cost = costs.get(piece)
            if cost is None:
                cost = _unknown_cost(piece, total)
            if best[start] + cost < best[end]:
                best[end], back[end] = best[start] + cost, start
    words: list[str] = []
    end = n
    while end > 0:
        words.append(letters[back[end] : end])
        end = back[end]
    return tuple(reversed(words))


def glued_parts(token: str) -> list[str]:
    """The lower-case words glued together in ``token`` (one ``\\w+`` run), or [] when it
    is one word. ``"Launchwindow09"`` -> ``["launch", "window", "09"]``."""
    if len(token) < 4 or len(token) > _MAX_TOKEN:
        return []
    parts: list[str] = []
    for run in _RUN.findall(token):
        if not (run.isascii() and run.isalpha()):  # digits, accented or other scripts
            parts.append(run.lower())
            continue
        for piece in _CASE.findall(run):
            lower = piece.lower()
            parts.extend(_segment(lower) if len(lower) > 3 else [lower])
    return parts if len(parts) > 1 else []


def glued_words(text: str) -> str:
    """Only the words of ``text``'s glued tokens, space-separated (``""`` when none)."""
    return " ".join(word for token in _WORD.findall(text) for word in glued_parts(token))


def split_glued(text: str) -> str:
    """``text`` with the words of every glued token written after it:
    ``"Quarterlyrevenue2023 up"`` -> ``"Quarterlyrevenue2023 quarterly revenue 2023 up"``.
    The token itself stays (an exact query for it still matches)."""

    def expand(match: re.Match[str]) -> str:
        parts = glued_parts(match.group())
        return f"{match.group()} {' '.join(parts)}" if parts else match.group()

    return _WORD.sub(expand, text)
