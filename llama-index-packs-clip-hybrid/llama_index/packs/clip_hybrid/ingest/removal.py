"""Removing images from the index: by id, by file path (the file may be gone), by folder,
or by a node a search returned, with their captions."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.schema import BaseNode, NodeWithScore
from llama_index.retrievers.selfhit import CONTENT_HASH_METADATA_KEY

from .._util import chunks
from ..images.discovery import bytes_node_id, discover_images, image_node_id
from ..milvus.captions import CaptionStore
from ..milvus.images import ImageStore
from .report import IngestFailure


@dataclass
class DeleteReport:
    """What :func:`delete_images` removed (image ids) and the items that matched nothing."""

    removed: list[str] = field(default_factory=list)
    failed: list[IngestFailure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": len(self.removed),
            "ids": list(self.removed),
            "failed": [{"item": f.path, "reason": f.reason} for f in self.failed],
        }


def delete_images(images: ImageStore, captions: CaptionStore, items: Any) -> DeleteReport:
    """Delete the image rows that ``items`` name, and their caption rows.

    Each item is an image id, a file path (``~`` expanded; the file need not exist any
    more), a folder (every image indexed under it), or a node (or ``NodeWithScore``) a
    search returned. An item that names nothing indexed is reported, and the others are
    still deleted."""
    report = DeleteReport()
    if not images.open_existing():
        report.failed = [IngestFailure(_label(i), _NOT_INDEXED) for i in _items(items)]
        return report
    wanted: dict[str, None] = {}
    folders: dict[str, str] = {}
    for item in _items(items):
        keys = _keys(item)
        if keys is None:
            report.failed.append(IngestFailure(_label(item), _NOT_A_KEY))
            continue
        ids, path = keys
        found = images.get(ids, ["path"])
        if found:
            wanted.update(dict.fromkeys(found))
        elif path is not None and not os.path.isfile(path):  # a folder, there or gone
            folders[path.rstrip(os.sep) + os.sep] = _label(item)
        else:
            report.failed.append(IngestFailure(_label(item), _NOT_INDEXED))
    if folders:  # one pass over the stored paths for every folder asked for
        matched: set[str] = set()
        for row in images.iter_rows(["path"]):
            prefix = next((p for p in folders if (row["path"] or "").startswith(p)), None)
            if prefix is not None:
                wanted[row["id"]] = None
                matched.add(prefix)
        report.failed += [
            IngestFailure(label, _NOT_INDEXED)
            for prefix, label in folders.items()
            if prefix not in matched
        ]
    ids = list(wanted)
    for batch in chunks(ids, 1000):
        if captions.open_if_present():  # a caption row has its image's id
            captions.delete(batch)
        images.delete(batch)
    report.removed = ids
    return report


#: The pack's image ids: uuid5 of a path or of a content hash.
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NOT_INDEXED = "is not in the index (no image id, file path or folder of it matches)"
_NOT_A_KEY = "is not an image id, a path or a node; pass one of those"


def _items(items: Any) -> list[Any]:
    if isinstance(items, (str, os.PathLike, BaseNode, NodeWithScore)):
        return [items]
    if isinstance(items, Iterable):
        return list(items)
    return [items]


def _keys(item: Any) -> tuple[list[str], str | None] | None:
    """The row ids an item may name, and the absolute path it may be. Only strings shaped
    like the pack's ids (uuid5) are tried as ids; a node is also tried by the id its image
    was stored under (its path's, or its bytes' from the content hash it carries)."""
    if isinstance(item, NodeWithScore):
        item = item.node
    if isinstance(item, BaseNode):
        ids = [item.node_id] if _ID.fullmatch(item.node_id) else []
        path = getattr(item, "image_path", None) or item.metadata.get("file_path")
        if isinstance(path, str) and path:
            ids.append(image_node_id(os.path.abspath(os.path.expanduser(path))))
        digest = item.metadata.get(CONTENT_HASH_METADATA_KEY)
        if isinstance(digest, str) and _SHA256.fullmatch(digest):
            ids.append(bytes_node_id(digest))
        return ids, None
    if isinstance(item, os.PathLike) or (isinstance(item, str) and item.strip()):
        text = os.fspath(item)
        path = os.path.abspath(os.path.expanduser(text))
        as_id = [text] if isinstance(item, str) and _ID.fullmatch(text) else []
        return [*as_id, image_node_id(path)], path
    return None


def _label(item: Any) -> str:
    if isinstance(item, NodeWithScore):
        item = item.node
    if isinstance(item, BaseNode):
        return f"node {item.node_id}"
    return os.fspath(item) if isinstance(item, str | os.PathLike) else repr(item)[:200]


def with_an_image(inputs: Any, *, recursive: bool) -> list[Any]:
    """``inputs`` as a list (an iterator is read here), once known to hold an image: for
    ``overwrite=True``, an empty folder (a typo, an unmounted drive) would put an empty
    index in place of the old one."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths = [os.path.expanduser(os.fspath(i)) for i in items if isinstance(i, (str, os.PathLike))]
    found = (f for f in discover_images(paths, recursive=recursive) if _opens_as_image(f))
    if not (any(_node_has_image(i) for i in items) or next(found, None)):
        raise ValueError(
            f"overwrite=True with no image in {', '.join(map(str, paths)) or 'the inputs'}: "
            "the index was kept. Check the path (a drive not mounted?), or delete the index "
            "files yourself to start empty."
        )
    return items


def _node_has_image(item: Any) -> bool:
    """An image node whose image is there: its bytes, or a file that is an image (the
    pack never fetches an ``image_url``)."""
    if not isinstance(item, BaseNode) or not hasattr(item, "image_path"):
        return False
    path = getattr(item, "image_path", None) or item.metadata.get("file_path")
    return bool(getattr(item, "image", None)) or bool(
        path and _opens_as_image(os.path.expanduser(str(path)))
    )


def _opens_as_image(path: Any) -> bool:
    """A regular file whose header Pillow reads as an image (PPM, AVIF, BigTIFF too; a
    junk ``.png`` no). Only the header is read."""
    from PIL import Image

    if not os.path.isfile(path):  # a FIFO would block the open
        return False
    try:
        with Image.open(path):
            return True
    except Exception:  # not an image, unreadable, a decompression bomb: not one to count
        return False
