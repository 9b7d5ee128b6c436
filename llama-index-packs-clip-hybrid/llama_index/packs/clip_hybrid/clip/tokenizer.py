"""CLIP's text tokenizer: cleaned, lower-cased text to the byte-pair ids the model was trained on.

The same ids as OpenAI's ``clip.tokenize`` (tested on a mixed corpus): text is repaired
with ftfy, HTML-unescaped twice, whitespace collapsed and lower-cased; split into words,
numbers (one digit each) and runs of other symbols; each piece's UTF-8 bytes are mapped to
printable characters and merged by the byte-pair ranks in ``bpe_simple_vocab_16e6.txt.gz``
(OpenAI's file, shipped in this package with its licence), the last symbol of a word
marked with ``</w>``.
"""

from __future__ import annotations

import gzip
import html
import threading
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from ..redaction import package_logger

logger = package_logger(__name__)

#: Merges used by the published models: the file holds more, the vocabulary is 49408 ids.
MERGES = 49152 - 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"
_PIECES = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """Each byte as one printable character: printable Latin-1 bytes stand for themselves,
    the others (controls, space) take the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class ClipTokenizer:
    """Text -> token ids (without the start and end tokens; see :meth:`encode`)."""

    def __init__(self) -> None:
        import regex

        raw = resources.files(__package__).joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
        lines = gzip.decompress(raw).decode("utf-8").split("\n")[1 : MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        symbols = list(byte_alphabet().values())
        vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges)]
        vocab += [START, END]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {(m[0], m[1]): rank for rank, m in enumerate(merges)}
        self.start_id = self.encoder[START]
        self.end_id = self.encoder[END]
        self._pieces = regex.compile(_PIECES, regex.IGNORECASE)
        self._spaces = regex.compile(r"\s+")
        self._cache: dict[str, tuple[str, ...]] = {START: (START,), END: (END,)}
        self._lock = threading.Lock()

    def clean(self, text: str) -> str:
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return self._spaces.sub(" ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` (no start or end token: callers add them)."""
        alphabet = byte_alphabet()
        ids: list[int] = []
        for piece in self._pieces.findall(self.clean(text)):
            symbols = "".join(alphabet[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self._merge(symbols))
        return ids

    def _merge(self, word: str) -> tuple[str, ...]:
        """Merge the symbols of ``word`` by rank until no ranked pair is left."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, MERGES + 1))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        result = tuple(parts)
        with self._lock:
            if len(self._cache) > 100_000:  # long-running servers see unbounded new words
                self._cache.clear()
                self._cache.update({START: (START,), END: (END,)})
            self._cache[word] = result
        return result


@lru_cache(maxsize=1)
def clip_tokenizer() -> ClipTokenizer:
    """The shared tokenizer (built once: ~0.5 s to read the merges)."""
    return ClipTokenizer()


def tokenize_batch(texts: Sequence[str], context_length: int = 77) -> Any:
    """Token ids of ``texts`` with start and end tokens, one row each, padded with zeros to
    ``context_length``; longer texts are cut (keeping the end token) with one warning."""
    import torch

    tokenizer = clip_tokenizer()
    sot, eot = tokenizer.start_id, tokenizer.end_id
    too_long = []
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot, *tokenizer.encode(text), eot]
        if len(ids) > context_length:
            too_long.append((i, len(ids)))
            ids = [*ids[: context_length - 1], eot]
        result[i, : len(ids)] = torch.tensor(ids)
    if too_long:
        i, n = too_long[0]
        logger.warning(
            "Truncated %d of %d texts to CLIP's %d-token context (e.g. text %d had %d "
            "tokens: %.60r...). CLIP reads only the start of long text.",
            len(too_long),
            len(texts),
            context_length,
            i,
            n,
            texts[i],
        )
    return result
