"""CLIP's text tokenizer: cleaned, lower-cased text to the byte-pair ids the model was trained on.

The same ids as OpenAI's ``clip.tokenize`` (tested on a mixed corpus): text is repaired
with ftfy, HTML-unescaped twice, whitespace collapsed and lower-cased; split into words,
numbers (one digit each) and runs of other symbols; each piece's UTF-8 bytes are mapped to
printable characters and merged by the byte-pair ranks in ``bpe_simple_vocab_16e6.txt.gz``
(OpenAI's file, shipped in this package with its licence), the last symbol of a word
marked with ``</w>``.

The merging runs in compiled code, Hugging Face ``tokenizers`` (a BPE model built from the
same file: 4-5x ``clip.tokenize``'s speed on 256 texts, 8x on words never seen, in
``benchmarks/bench_embedding.py --tokenizer-only``). Plain ASCII text is split in compiled
code too. Other text is split here, with the ``regex`` module that OpenAI's tokenizer
uses: the regex engine inside ``tokenizers`` knows an older Unicode, and splits ~17,000
newer letters differently. Plain ASCII text skips ftfy, which leaves it unchanged. Batches
are merged on ``tokenizers``' own threads (``TOKENIZERS_PARALLELISM=false`` turns them off).
"""

from __future__ import annotations

import gzip
import html
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from ..redaction import package_logger

logger = package_logger(__name__)

#: Merges used by the published models: the file holds more, the vocabulary is 49408 ids.
MERGES = 49152 - 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"
_WORDS = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
_PIECES = rf"<\|startoftext\|>|<\|endoftext\|>|{_WORDS}"
#: Text that ftfy and HTML unescaping leave as it is: printable ASCII but "&", and the
#: whitespace that collapses to one space anyway (ftfy changes only "\r" of these, to
#: "\n"; it deletes some other control characters, such as "\x0b", which would not be).
_PLAIN = re.compile(r"[\x20-\x25\x27-\x7e\t\n\r]*")


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
        merges = [(a, b) for a, b in (line.split() for line in lines)]
        symbols = list(byte_alphabet().values())
        vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges)]
        vocab += [START, END]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.start_id = self.encoder[START]
        self.end_id = self.encoder[END]
        self._pieces = regex.compile(_PIECES, regex.IGNORECASE)
        self._spaces = regex.compile(r"\s+")
        self._ascii = _compiled_bpe(self.encoder, merges, split=_WORDS)
        self._words = _compiled_bpe(self.encoder, merges, split=None)

    def clean(self, text: str) -> str:
        if _PLAIN.fullmatch(text):  # what ftfy and unescaping would return unchanged
            return " ".join(text.split()).lower()
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return self._spaces.sub(" ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` (no start or end token: callers add them)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids of each text, as :meth:`encode`. Plain ASCII text is split and merged in
        one compiled call; other text is split here and its words merged in a second one."""
        if isinstance(texts, str):
            raise TypeError("encode_batch() takes a list of texts; for one text use encode().")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"Text {i} is a {type(text).__name__}, not a str.")
        cleaned = [self.clean(text) for text in texts]
        # The compiled split is case-sensitive (OpenAI's ignores case): equal here only
        # because clean() has lower-cased the text.
        compiled = [text.isascii() and "<|" not in text for text in cleaned]
        out: list[list[int]] = [[] for _ in texts]
        plain = [i for i, yes in enumerate(compiled) if yes]
        if plain:
            found = self._ascii.encode_batch([cleaned[i] for i in plain], add_special_tokens=False)
            for i, encoding in zip(plain, found, strict=True):
                out[i] = encoding.ids
        steps = {i: self._steps(cleaned[i]) for i, yes in enumerate(compiled) if not yes}
        words = [step for plan in steps.values() for step in plan if isinstance(step, list)]
        merged = self._words.encode_batch(words, is_pretokenized=True, add_special_tokens=False)
        runs = iter(merged)  # in the order of ``words``: text by text, run by run
        for i, plan in steps.items():
            for step in plan:
                out[i].extend([step] if isinstance(step, int) else next(runs).ids)
        return out

    def _steps(self, text: str) -> list[int | list[str]]:
        """``text`` split with OpenAI's pattern: the special tokens written in it as their
        ids, each run of pieces between them as a list (merged as one pre-split text)."""
        specials = {START: self.start_id, END: self.end_id}
        steps: list[int | list[str]] = []
        for piece in self._pieces.findall(text):
            if piece in specials:
                steps.append(specials[piece])
            elif steps and isinstance(steps[-1], list):
                steps[-1].append(piece)
            else:
                steps.append([piece])
        return steps


def _compiled_bpe(encoder: dict[str, int], merges: list[tuple[str, str]], split: str | None) -> Any:
    """A ``tokenizers`` BPE with CLIP's merges and byte alphabet; with ``split``, it also
    splits text into the words that pattern matches (dropping what it does not match)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    model = models.BPE(
        vocab=encoder, merges=merges, end_of_word_suffix="</w>", continuing_subword_prefix=""
    )
    tokenizer = Tokenizer(model)
    bytes_ = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if split is None:
        tokenizer.pre_tokenizer = bytes_
    else:
        words = pre_tokenizers.Split(Regex(split), behavior="removed", invert=True)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([words, bytes_])
    return tokenizer


@lru_cache(maxsize=1)
def clip_tokenizer() -> ClipTokenizer:
    """The shared tokenizer (built once: ~0.25 s here, reading the merges into two BPEs)."""
    return ClipTokenizer()


def tokenize_batch(texts: Sequence[str], context_length: int = 77) -> Any:
    """Token ids of ``texts`` with start and end tokens, one row each, padded with zeros to
    ``context_length``; longer texts are cut (keeping the end token) with one warning."""
    import numpy as np
    import torch

    if context_length < 2:
        raise ValueError(f"context_length={context_length}: a row needs >= 2 (start, end).")
    tokenizer = clip_tokenizer()
    sot, eot = tokenizer.start_id, tokenizer.end_id
    too_long = []
    result = np.zeros((len(texts), context_length), dtype=np.int64)
    for i, ids in enumerate(tokenizer.encode_batch(texts)):
        if len(ids) + 2 > context_length:
            too_long.append((i, len(ids) + 2))
            ids = ids[: context_length - 2]
        result[i, : len(ids) + 2] = [sot, *ids, eot]
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
    return torch.from_numpy(result)
