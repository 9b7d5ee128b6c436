"""What a stored image row holds: which paths and metadata Milvus can keep, and under what names."""

from __future__ import annotations

import os
from typing import Any

from ..milvus.images import BUILTIN_FIELDS, MAX_PATH_BYTES

#: Row fields a user's metadata key may not take as it is (it is stored as ``meta_<key>``).
RESERVED = {"id", "vector", *BUILTIN_FIELDS}


def unstorable_path(path: str) -> str | None:
    """Why this path cannot be a row (Milvus keeps paths as UTF-8 text), or None."""
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8; rename the file to index it"
    if size > MAX_PATH_BYTES:
        return f"the path is longer than {MAX_PATH_BYTES} bytes; move the file to a shorter path"
    return None


def metadata_problem(metadata: dict[str, Any]) -> str | None:
    """Why these metadata cannot be stored as given (Milvus would refuse the whole chunk,
    or one key would overwrite another), naming the key and the fix; or None."""
    for key, value in metadata.items():
        if key.startswith("$"):
            return f"metadata key {key!r}: Milvus reserves names starting with '$'; rename it"
        if key in RESERVED and f"meta_{key}" in metadata:
            return (
                f"metadata keys {key!r} and 'meta_{key}' would both be stored as "
                f"'meta_{key}' ({key!r} is a built-in field); rename one"
            )
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, int) and not isinstance(item, bool):
                if not -(2**63) <= item < 2**63:
                    return f"metadata {key!r}: {item} does not fit in 64 bits; store it as a string"
            elif isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return f"metadata {key!r} is not valid UTF-8 text; fix or drop that value"
    return None


def stored_form(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata as a row stores them (a built-in field's name gets ``meta_``)."""
    return {f"meta_{k}" if k in RESERVED else k: v for k, v in metadata.items()}


def user_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The stored metadata of a row read with ``["sha256", "$meta"]``."""
    return {k: v for k, v in row.items() if k not in ("id", "sha256")}


def storable(value: Any) -> bool:
    """Whether Milvus keeps this metadata value (a scalar or a list of scalars)."""
    return isinstance(value, (str, int, float, bool)) or (
        isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value)
    )


def image_row(
    metadata: dict[str, Any],
    *,
    id: str,
    vector: list[float],
    path: str,
    sha256: str,
    width: int,
    height: int,
    size: int,
    mtime: float,
) -> dict[str, Any]:
    """The row of one image: its metadata (renamed where they clash) and the fixed fields;
    the folder and category come from the path."""
    folder = os.path.dirname(path) if path else ""
    row: dict[str, Any] = stored_form(metadata)
    row.update(
        id=id,
        vector=vector,
        path=path,
        sha256=sha256,
        folder=folder,
        category=os.path.basename(folder),
        width=int(width),
        height=int(height),
        size=int(size),
        mtime=float(mtime),
    )
    return row
