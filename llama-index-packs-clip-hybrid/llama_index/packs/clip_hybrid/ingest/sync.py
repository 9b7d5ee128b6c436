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
    prefixes = tuple(dict.fromkeys(r.rstrip(os.sep) + os.sep for r in roots))  # once each
    stale: list[tuple[str, tuple[str, ...]]] = []  # (id, the given roots it is under)
    rows_under: dict[str, int] = dict.fromkeys(prefixes, 0)
    gone_under: dict[str, int] = dict.fromkeys(prefixes, 0)
    unchecked: dict[str, int] = {}
    for row in store.iter_rows(["path"]):
        path = row["path"]
        if not path.startswith(prefixes) or (not recursive and os.path.dirname(path) not in roots):
            continue
        under = tuple(r for r in prefixes if path.startswith(r))  # nested roots: each
        for root in under:
            rows_under[root] += 1
        state = file_state(path)
        if state is False:
            stale.append((row["id"], under))
            for root in under:
                gone_under[root] += 1
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
    # A root whose rows are all gone at once keeps them, and so does every root in it.
    emptied = {r for r in prefixes if gone_under[r] >= EMPTIED and gone_under[r] == rows_under[r]}
    for root in sorted(emptied):
        failures.append(IngestFailure(root.rstrip(os.sep), emptied_reason(gone_under[root])))
    return [row_id for row_id, under in stale if not emptied.intersection(under)], failures


#: A sync root whose indexed images are all gone at once (this many or more) is not
#: synced: that is an unmounted drive or a moved folder far more often than a deletion.
EMPTIED = 2


def emptied_reason(n: int) -> str:
    return (
        f"every one of its {n} indexed images is gone at once (an unmounted drive, a moved "
        "folder?), so they were kept, not removed; if they are really gone, remove them "
        "with pack.delete([folder]) or sync a folder above it"
    )
