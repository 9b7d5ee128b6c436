"""A normal run of the command prints only its own output; ``--debug`` shows everything.

The command owns its process, so it may tell libraries to be quiet, which the library
part of this package never does:

- Python warnings from dependencies (jieba importing the deprecated ``pkg_resources``);
- log records of dependencies below ERROR, and pymilvus' and gRPC's logged RPC errors
  (their tracebacks; the error itself reaches us as an exception, said in one line);
- lines C and C++ libraries write straight to file descriptor 2: FAISS's "WARNING
  clustering N points to N centroids" when Milvus Lite indexes a small segment, gRPC's
  core log lines. They are filtered out of stderr by a pipe; everything else passes.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings

from ..redaction import RedactingFilter

#: Lines of C/C++ libraries dropped from stderr on a normal run.
NOISE = re.compile(
    rb"^(WARNING clustering \d+ points to \d+ centroids|[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ "
    rb"\S+\.(cc|h):\d+\])"
)

_state: dict[str, object] = {}


class TerminalFormatter(logging.Formatter):
    """Log lines with control characters escaped, as the command's own output is: a file
    name carrying a newline or an ANSI escape cannot forge or recolour a line. Tracebacks
    (``--debug``) keep their line breaks."""

    def format(self, record: logging.LogRecord) -> str:
        from .output import escape

        escaped = logging.makeLogRecord(record.__dict__)
        escaped.msg, escaped.args = escape(record.getMessage()), None  # one line
        head, _, trace = super().format(escaped).partition("\n")
        if not trace:
            return head
        return "\n".join([head, *(escape(line) for line in trace.split("\n"))])


def configure_logging(debug: bool) -> None:
    """Log records to stderr, escaped (a no-op when the process configured logging)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(TerminalFormatter("%(levelname)s %(name)s: %(message)s"))
    # Every record printed, the libraries' too (``--debug`` shows httpx's request lines,
    # with any ``user:password@`` of a base URL), has its secrets masked here.
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)


def quiet(debug: bool) -> None:
    """Set up the process for a normal run (or, with ``debug``, for seeing everything)."""
    configure_logging(debug)
    if debug:
        return
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="jieba")
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # read once, when grpc is imported
    # pymilvus sets its loggers' levels with dictConfig when it is imported (its
    # settings.py), undoing any level set before: import it first, then quiet it. Every
    # command opens a database, so the import is not extra work.
    import pymilvus  # noqa: F401

    for name in (
        *("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer"),
        *("grpc", "milvus_lite", "jieba", "bm25s", "httpx"),
    ):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    filter_native_stderr()


def filter_native_stderr() -> None:
    """Route file descriptor 2 through a thread that drops :data:`NOISE` lines."""
    if _state:
        return
    try:
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:  # no usable stderr: nothing to filter
        return
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, original), daemon=True)
    pump.start()
    _state.update(original=original, pump=pump)


def release() -> None:
    """Put stderr back and let the filter write out what it holds (before exiting)."""
    if not _state:
        return
    original = _state.pop("original")
    pump = _state.pop("pump")
    assert isinstance(original, int) and isinstance(pump, threading.Thread)
    sys.stderr.flush()
    os.dup2(original, 2)  # the pipe's last writer closes: the pump reads to its end
    pump.join(timeout=5)
    os.close(original)


def _pump(read_end: int, out: int) -> None:
    """Copy what arrives to ``out`` line by line (a progress bar's ``\\r`` ends a line
    too), leaving out noise lines. An unfinished line is passed on at once unless it
    could be the start of a noise line (those begin with W, I or E)."""
    pending = b""
    while True:
        try:
            data = os.read(read_end, 65536)
        except OSError:
            return
        if not data:
            if pending and not NOISE.match(pending):
                os.write(out, pending)
            return
        pieces = re.split(rb"(\r|\n)", pending + data)
        pending = pieces.pop()
        chunk = b"".join(
            piece + sep
            for piece, sep in zip(pieces[0::2], pieces[1::2], strict=True)
            if not NOISE.match(piece)
        )
        if pending and pending[:1] not in (b"W", b"I", b"E"):
            chunk, pending = chunk + pending, b""
        if chunk:
            os.write(out, chunk)
