"""What the command prints: people's lines (control characters escaped) and JSON (valid UTF-8)."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..redaction import redact, redact_known


def escape(text: Any) -> str:
    """``text`` safe for a terminal line: control characters (ANSI escapes, newlines) and
    the undecodable bytes of file names (lone surrogates) written as ``\\xNN``/``\\uNNNN``."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def _valid_text(value: Any) -> Any:
    """``value`` with every string valid Unicode (lone surrogates escaped), recursively."""
    if isinstance(value, str):
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
            return "".join(
                (
                    f"\\x{ord(ch) - 0xDC00:02x}"
                    if 0xDC80 <= ord(ch) <= 0xDCFF
                    else f"\\u{ord(ch):04x}"
                )
                if 0xD800 <= ord(ch) <= 0xDFFF
                else ch
                for ch in value
            )
        return value
    if isinstance(value, dict):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_valid_text(v) for v in value]
    return value


def print_json(payload: dict[str, Any]) -> None:
    """One JSON object on stdout (UTF-8; the keys this process knows never in it). Its
    strings are the user's data: only exact known keys are masked, in each value."""
    print(json.dumps(_known_masked(_valid_text(payload)), ensure_ascii=False))


def line(text: str) -> None:
    """One line for people on stdout (already escaped pieces, known keys masked)."""
    print(redact_known(text))


def _known_masked(value: Any) -> Any:
    if isinstance(value, str):
        return redact_known(value)
    if isinstance(value, dict):
        return {k: _known_masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_known_masked(v) for v in value]
    return value


def error(message: str) -> None:
    """One ``clip-hybrid: error: ...`` line on stderr."""
    text = escape(" ".join(str(message).split()))
    print(f"clip-hybrid: error: {redact(text)}", file=sys.stderr)


def warning(message: str) -> None:
    print(f"clip-hybrid: warning: {redact(escape(message))}", file=sys.stderr)
