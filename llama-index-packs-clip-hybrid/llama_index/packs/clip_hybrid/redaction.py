"""Secrets out of text: anything that looks like an API key in a message or log line."""

from __future__ import annotations

import re

_KEY_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-*]{4,}|Bearer\s+\S+|api[_-]?key=\S+)", re.I)


def redact(text: str) -> str:
    """``text`` with anything that looks like an API key replaced by ``***``."""
    return _KEY_PATTERN.sub("***", text)
