"""Which stored rows a sync removes: those whose file is gone, never one that cannot be checked."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..milvus.images import ImageStore
from .report import IngestFailure


def file_state(path: str) -> bool | None:
    """True when the file is there, False when it is certainly gone, None when that
    cannot be told (a folder on its path that cannot be entered, an I/O error)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return None
    return True


def stale_rows(
    store: ImageStore, roots: Sequence[str], *, recursive: bool
) -> tuple[list[str], list[IngestFailure]]:
    """The ids of rows under ``roots`` (directly in them when not ``recursive``) whose
    file is gone, and a failure for each folder whose files could not be checked (their
    rows are kept).

    Only that: a row whose file exists stays, whether or not this run walked to it (a
    hidden file or one under a symlinked folder, indexed by name; a sub-folder with
    ``recursive=False``; a folder that cannot be listed)."""
    prefixes = tuple(r.rstrip(os.sep) + os.sep for r in roots)
    stale: list[str] = []
    unchecked: dict[str, int] = {}
    for row in store.iter_rows(["path"]):
        path = row["path"]
        if not path.startswith(prefixes) or (not recursive and os.path.dirname(path) not in roots):
            continue
        state = file_state(path)
        if state is False:
            stale.append(row["id"])
        elif state is None:
            folder = os.path.dirname(path)
            unchecked[folder] = unchecked.get(folder, 0) + 1
    failures = [
        IngestFailure(
            folder,
            f"cannot be read, so {n} indexed file(s) under it were kept, not removed; fix "
            "its permissions and sync again",
        )
        for folder, n in sorted(unchecked.items())
    ]
    return stale, failures
