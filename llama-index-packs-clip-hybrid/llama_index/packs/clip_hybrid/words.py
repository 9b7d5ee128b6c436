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
SPLITTER_VERSION = 1
#: The most frequent words kept from the list (it holds 333k; the rarest are mostly
#: fragments and typos that split real words into junk).
VOCABULARY_SIZE = 100_000
#: Longest word tried in a split; longer tokens are left as they are past this many letters.
_MAX_WORD = 24
_MAX_TOKEN = 80

_WORD = re.compile(r"\w+")
#: Letter runs, digit runs and everything else (underscores and non-ASCII letters),
#: with a lower->upper case change as a boundary too ("totalRevenue").
_PIECE = re.compile(r"[A-Z]*[a-z]+|[A-Z]+(?![a-z])|[0-9]+|[^\W\d_A-Za-z]+")


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
    for piece in _PIECE.findall(token):
        lower = piece.lower()
        if lower.isascii() and lower.isalpha() and len(lower) > 3:
            parts.extend(_segment(lower))
        else:
            parts.append(lower)
    return parts if len(parts) > 1 else []


def split_glued(text: str) -> str:
    """``text`` with the words of every glued token written after it:
    ``"Quarterlyrevenue2023 up"`` -> ``"Quarterlyrevenue2023 quarterly revenue 2023 up"``.
    The token itself stays (an exact query for it still matches)."""

    def expand(match: re.Match[str]) -> str:
        parts = glued_parts(match.group())
        return f"{match.group()} {' '.join(parts)}" if parts else match.group()

    return _WORD.sub(expand, text)
