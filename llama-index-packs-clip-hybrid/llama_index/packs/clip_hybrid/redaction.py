"""Secrets out of text: the keys this process knows, and anything shaped like an API key.

Every message the package prints or logs passes through :func:`redact`: exception
messages on the command line, log records of the package's loggers (:func:`package_logger`),
hybrid branch failures, the preview page's errors. A service's error can echo the key it
was sent (some proxies do): known keys (given to a client, or in the usual environment
variables) are replaced wherever they appear, and key-shaped strings and URL passwords
(``https://user:***@host``) besides.

Results (paths, captions, scores) are the user's data, not messages: they go through
:func:`redact_known` only, which masks the exact keys this process knows (and URL
passwords) and nothing shaped like a key (a file named ``desk-lamp.png`` or
``Bearer bond.png`` stays as it is).
"""

from __future__ import annotations

import logging
import os
import re
import threading

#: Key-shaped text in messages: OpenAI-style keys (a word starting ``sk-``, 16 characters
#: on), bearer tokens, ``api_key=`` values. None of them reaches past a quote or a space.
_KEY_PATTERN = re.compile(
    r"(\bsk-[A-Za-z0-9_\-*]{16,}|\bBearer\s+[^\s\"',;]+|\bapi[_-]?key=[^\s\"'&,;]+)", re.I
)
#: The password of a URL's ``user:password@`` part (a Milvus server's, a proxy's).
#: An ``@`` in the password itself, unescaped, is taken as the URL parsers take it (the
#: last one before the host ends the password); the authority ends at ``/``, ``?`` or
#: ``#``, so ``http://host:8080?q=a@b.com`` keeps its port. The scheme may not start
#: inside a longer run of scheme characters (a look-behind, not ``\b``): with ``\b`` every
#: word in a long run of "a.a.a." started a new scan (quadratic: 28 s on 100 kB).
_URL_PASSWORD = re.compile(
    r"((?<![a-z0-9+.\-])[a-z][a-z0-9+.\-]*://[^\s/?#@:]*:)[^\s/?#]+(@)", re.I
)
MASK = "***"
#: Environment variables whose values are secrets.
SECRET_VARIABLES = ("OPENAI_API_KEY", "DASHSCOPE_API_KEY", "MILVUS_TOKEN")
#: Shorter values are not treated as secrets (they would mask ordinary words): a key of
#: 6 characters (a local proxy's, say) is masked, one of 5 is not.
MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_known: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret (an API key, a token) so that :func:`redact` hides it."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _lock:
            _known.add(value)


def redact(text: str) -> str:
    """``text`` (a message) with every known secret and anything that looks like an API
    key masked."""
    return _KEY_PATTERN.sub(MASK, redact_known(text))


def redact_known(text: str) -> str:
    """``text`` (data: a path, a caption) with the keys this process knows masked, and
    the password of any ``scheme://user:password@host`` in it."""
    with _lock:
        known = set(_known)
    known.update(
        v for name in SECRET_VARIABLES if len(v := os.environ.get(name, "")) >= MIN_SECRET_LENGTH
    )
    for secret in sorted(known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<2>", text)


class RedactingFilter(logging.Filter):
    """Masks secrets in a log record's message and its exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def package_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the redacting filter (a logger's filters see only
    the records logged on it: every module of the package takes its logger here)."""
    log = logging.getLogger(name)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)
    return log
