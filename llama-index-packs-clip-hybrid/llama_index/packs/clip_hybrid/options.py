"""The one rule set for search options (modes, top_k, branches, weights) and how errors name them.

Every check of a search option lives here, so the pack, the CLI, the preview server and
the evaluation accept and refuse the same values with the same words. Messages name
options with a small markup, ``{similarity_top_k}`` or ``{mode=hybrid}``, that
:func:`render` writes as Python arguments (``similarity_top_k``, ``mode='hybrid'``) for
library users and as flags (``--top-k``, ``--mode hybrid``) on the command line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

#: Defaults, here so that anything (the CLI's --help) can name them without imports.
DEFAULT_URI = "./clip_hybrid.db"
DEFAULT_COLLECTION = "images"
DEFAULT_CAPTION_COLLECTION = "captions"
DEFAULT_CLIP_MODEL = "ViT-B/32"

Mode = Literal["auto", "text", "image", "hybrid"]
MODES: tuple[str, ...] = ("auto", "text", "image", "hybrid")

BRANCH_CLIP = "clip"
BRANCH_CAPTION = "caption_vector"
BRANCH_BM25 = "bm25"
BRANCHES: tuple[str, ...] = (BRANCH_CLIP, BRANCH_CAPTION, BRANCH_BM25)
#: The caption branches (what runs without CLIP).
CAPTION_BRANCHES: tuple[str, ...] = (BRANCH_CAPTION, BRANCH_BM25)

#: The RRF constant (LlamaIndex's QueryFusionRetriever hard-codes 60).
DEFAULT_RRF_K = 60.0
#: The most hits one Milvus search returns (its topk limit).
MAX_SEARCH_LIMIT = 16384

Style = Literal["python", "cli"]

#: Python argument -> command-line flag, for the options the CLI has.
CLI_FLAGS = {
    "similarity_top_k": "--top-k",
    "mode": "--mode",
    "branches": "--branches",
    "overwrite": "--overwrite",
    "keep_self_hit": "--keep-self-hit",
    "collection_name": "--collection",
    "clip_model": "--clip-model",
    "embed_model": "--clip-model",
    "caption_embed": "--caption-embed",
    "captioner": "--captioner",
    "caption_model": "--caption-model",
    "caption_lang": "--caption-lang",
    "caption_concurrency": "--concurrency",
    "batch_size": "--batch-size",
    "bm25": "--bm25",
    "uri": "--db",
    "filters": "--filter",
    "query": "QUERY",
    "image": "--image",
    "device": "--device",
    "precision": "--precision",
    "sync": "--sync",
}

_MARK = re.compile(r"\{([a-z_]+)(?:=([^{}]*))?\}")


def render(text: str, style: Style = "python") -> str:
    """``text`` with its option marks written for ``style`` (see the module docstring)."""

    def one(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        flag = CLI_FLAGS.get(name)
        if style == "cli" and flag is not None:
            if value is None or value == "True":
                return flag
            if flag.isupper():  # a positional argument
                return value
            return f"{flag} {value}"
        if value is None:
            return name
        if value in ("True", "False", "None") or _is_number(value) or value.startswith("["):
            return f"{name}={value}"
        return f"{name}={value!r}"

    return _MARK.sub(one, text)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class ClipHybridError(Exception):
    """An error whose message names options with :func:`render`'s marks: ``str()`` gives
    the Python wording, :meth:`for_cli` the command line's."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.marked = message

    def __str__(self) -> str:
        return render(self.marked, "python")

    def for_cli(self) -> str:
        return render(self.marked, "cli")


class OptionError(ClipHybridError, ValueError):
    """A bad option value, or options that do not go together."""


def check_mode(mode: Any, allowed: tuple[str, ...] = MODES) -> Mode:
    """A search mode among ``allowed`` (all of :data:`MODES` by default)."""
    if mode not in allowed:
        choices = ", ".join(repr(m) for m in allowed)
        raise OptionError(f"{{mode}} must be one of {choices}; got {mode!r}.")
    return mode


def check_workers(value: Any) -> int | None:
    """Decode threads: a whole number from 1, or None (every core the process may use)."""
    return None if value is None else check_top_k(value, option="workers")


def check_top_k(value: Any, *, option: str = "similarity_top_k", at_most: int | None = None) -> int:
    """A whole number of results from 1 (to ``at_most``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{{{option}}} must be a whole number >= 1, got {value!r}.")
    if at_most is not None and value > at_most:
        raise OptionError(f"{{{option}}} must be at most {at_most}, got {value!r}.")
    return value


def check_branches(branches: Iterable[str] | None) -> tuple[str, ...] | None:
    """Branch names, each known, in the canonical order; None means all that can run."""
    if branches is None:
        return None
    if isinstance(branches, str):
        branches = [b.strip() for b in branches.split(",") if b.strip()]
    wanted = list(branches)
    unknown = sorted(set(wanted) - set(BRANCHES))
    if unknown or not wanted:
        raise OptionError(
            f"{{branches}}: unknown branches {unknown}; choose from {', '.join(BRANCHES)}."
            if unknown
            else f"{{branches}} is empty; choose from {', '.join(BRANCHES)}."
        )
    return tuple(b for b in BRANCHES if b in wanted)


def check_rrf_k(value: float) -> float:
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    ):
        raise OptionError(f"rrf_k={value} must be a finite number > 0.")
    return float(value)


def check_weights(
    weights: Mapping[str, float] | None, known: Iterable[str] = BRANCHES
) -> dict[str, float]:
    """Per-branch weights: known branch names, finite numbers >= 0."""
    if not weights:
        return {}
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise OptionError(f"weights for unknown branches: {unknown}")
    bad = {
        name: w
        for name, w in weights.items()
        if isinstance(w, bool)
        or not isinstance(w, (int, float))
        or not (math.isfinite(w) and w >= 0)
    }
    if bad:
        raise OptionError(f"weights must be finite numbers >= 0: {bad}")
    return {name: float(w) for name, w in weights.items()}


def check_text_query(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise OptionError("The text {query} is empty; type something to search for.")
    return text
