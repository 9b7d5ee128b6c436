"""What makes a retrieved node "the query image itself": ids, resolved paths, content hashes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index.core.schema import BaseNode, QueryBundle

#: Metadata key under which ingestion may store the sha256 of an image's bytes. When a
#: retrieved node carries it, the bytes rule needs no file read.
CONTENT_HASH_METADATA_KEY = "image_sha256"

#: Metadata keys that may hold an image's file path (LlamaIndex readers write ``file_path``).
DEFAULT_PATH_METADATA_KEYS: tuple[str, ...] = ("file_path", "image_path", "path")

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".jfif", ".ico"}
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_path(path: str | os.PathLike[str]) -> str:
    """Absolute path with symlinks resolved; relative paths are taken from the cwd."""
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


#: How LlamaIndex's ``RetrieverTool`` passes an agent's keyword argument: "input is <value>".
_TOOL_ARGUMENT = re.compile(r"[A-Za-z_]\w* is (.+)", re.DOTALL)


def image_path_in(text: str) -> str | None:
    """The image file a string query names, or None for a text query.

    A string that is a path with an image suffix, and nothing else, names that file (a
    missing file is then an error that names it). LlamaIndex's ``RetrieverTool`` wraps an
    agent's argument: ``"<path>\\n\\n"`` passed positionally, ``"\\ninput is <path>\\n"`` as
    a keyword. Such a wrapped string names an image only when the file exists, so a
    text query that ends in ".png" stays a text query.
    """
    if len(text) > 4096:
        return None
    bare = text.strip()
    if bare == text:
        return text if _is_image_name(text) else None
    keyword = _TOOL_ARGUMENT.fullmatch(bare)
    for candidate in (bare, keyword.group(1).strip() if keyword else ""):
        if _is_image_name(candidate) and os.path.isfile(candidate):
            return candidate
    return None


def _is_image_name(text: str) -> bool:
    return bool(text) and "\n" not in text and Path(text).suffix.lower() in IMAGE_SUFFIXES


class _FileHashCache:
    """sha256 of files keyed by (path, size, mtime, ctime, inode): a changed file is
    hashed again, also one rewritten with its old size and mtime put back (``cp -p``,
    ``rsync -t``, tar): the ctime changes with every write and ``utime``."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: OrderedDict[tuple[str, int, int, int, int], str] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, path: str) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        try:
            digest = _hash_file(path)
        except OSError:
            return None
        with self._lock:
            self._entries[key] = digest
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return digest


def _hash_file(path: str) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


_FILE_HASHES = _FileHashCache()


def _check_image_bytes(data: bytes, name: str) -> None:
    """Raise a ValueError naming ``name`` when ``data`` is not an image PIL can open."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError(f"Query image {name} is empty (0 bytes); pass a PNG, JPEG or WebP image.")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except UnidentifiedImageError as exc:
        # Pillow's message names the in-memory buffer ("<_io.BytesIO object at 0x...>"):
        # say what the user can act on instead.
        head = data[:512].lstrip().lower()
        kind = (
            "an SVG (vector) file"
            if b"<svg" in head or name.lower().endswith((".svg", ".svgz"))
            else "not in an image format Pillow reads"
        )
        raise ValueError(
            f"Query image {name} cannot be read as an image ({kind}); "
            "pass a PNG, JPEG or WebP image."
        ) from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(
            f"Query image {name} cannot be read as an image ({exc}); "
            "pass a PNG, JPEG or WebP image."
        ) from exc
    if data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        # verify() does not decode a JPEG, so one cut short passes it (and fails later in
        # the embedder, unnamed). Its last scan has no end marker: decode it, at 1/8 scale
        # (a few ms), to know. A whole JPEG ends its scan with one and costs nothing here.
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(
                f"Query image {name} cannot be read as an image ({exc}); "
                "pass a PNG, JPEG or WebP image."
            ) from exc


@dataclass(frozen=True)
class QueryImage:
    """The identity of a query image, normalised from any accepted query form."""

    node_id: str | None = None
    path: str | None = None
    sha256: str | None = None
    data: bytes | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], node_id: str | None = None) -> QueryImage:
        resolved = resolve_path(path)
        if os.path.isdir(resolved):
            raise ValueError(
                f"Query image {os.fspath(path)!s} is a folder; pass the path of one image file."
            )
        if os.path.exists(resolved) and not os.path.isfile(resolved):
            raise ValueError(
                f"Query image {os.fspath(path)!s} is not a regular file (a pipe, socket or "
                "device); pass the path of an image file."
            )
        if not os.path.isfile(resolved):
            raise FileNotFoundError(
                f"Query image {os.fspath(path)!s} does not exist (resolved to {resolved}); "
                "pass the path of an existing image file."
            )
        try:
            with open(resolved, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ValueError(
                f"Query image {os.fspath(path)!s} cannot be read ({exc.strerror}); "
                "check its permissions."
            ) from exc
        _check_image_bytes(data, os.fspath(path))
        return cls(node_id=node_id, path=resolved, sha256=sha256_bytes(data), data=data)

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> QueryImage:
        _check_image_bytes(data, name)
        return cls(sha256=sha256_bytes(data), data=data)

    @classmethod
    def from_pil(cls, image: Any) -> QueryImage:
        # An image opened from a file keeps its filename: match it by path and bytes,
        # unless its pixels were changed since (paste, thumbnail, ImageDraw keep the name).
        filename = getattr(image, "filename", None)
        if filename and os.path.isfile(filename) and _same_pixels(image, filename):
            return cls.from_path(filename)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return cls.from_bytes(buf.getvalue(), name="<PIL image>")

    @classmethod
    def from_node(cls, node: BaseNode) -> QueryImage:
        path = getattr(node, "image_path", None) or _metadata_path(node, DEFAULT_PATH_METADATA_KEYS)
        if getattr(node, "image", None):  # ImageNode, and ImageDocument (not a subclass)
            data = _decode_b64(node.image, node.node_id)  # type: ignore[attr-defined]
            _check_image_bytes(data, f"node {node.node_id}")
            return cls(
                node_id=node.node_id,
                path=resolve_path(path) if path else None,
                sha256=sha256_bytes(data),
                data=data,
            )
        if path:
            found = cls.from_path(path, node_id=node.node_id)
            return found
        stored = node.metadata.get(CONTENT_HASH_METADATA_KEY)
        return cls(node_id=node.node_id, sha256=stored if isinstance(stored, str) else None)

    @classmethod
    def from_query_bundle(cls, bundle: QueryBundle) -> QueryImage | None:
        """The query image of a bundle, or None for a text query."""
        if isinstance(bundle, ImageQueryBundle):
            return bundle.query_image
        if bundle.image_path:
            return cls.from_path(bundle.image_path)
        return None


@dataclass
class ImageQueryBundle(QueryBundle):
    """A QueryBundle that carries the normalised identity of its query image."""

    query_image: QueryImage | None = None


def _decode_b64(value: str, node_id: str) -> bytes:
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"Node {node_id} has an image field that is not base64: {exc}") from exc


def _metadata_path(node: BaseNode, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = node.metadata.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def node_path(node: BaseNode, keys: tuple[str, ...]) -> str | None:
    """The resolved file path of a retrieved node, if it names one."""
    path = getattr(node, "image_path", None) or _metadata_path(node, keys)
    return resolve_path(path) if path else None


def node_sha256(node: BaseNode, keys: tuple[str, ...]) -> str | None:
    """sha256 of a retrieved node's image bytes: stored metadata, inline base64, or its file."""
    stored = node.metadata.get(CONTENT_HASH_METADATA_KEY)
    if isinstance(stored, str) and stored:
        return stored
    if getattr(node, "image", None):  # ImageNode, and ImageDocument (not a subclass)
        try:
            return sha256_bytes(base64.b64decode(node.image))  # type: ignore[attr-defined]
        except (binascii.Error, ValueError):
            return None
    path = node_path(node, keys)
    return _FILE_HASHES.get(path) if path else None


def _same_pixels(image: Any, filename: str) -> bool:
    """True when ``image`` still holds the pixels of the file it was opened from: never
    loaded (so never edited), closed (its pixels are gone: the file is all there is), or
    equal to the file's. Past :data:`COMPARE_PIXELS` pixels a loaded image is taken as its
    file (decoding a 50 MP file again to compare cost 1.2 s and 570 MB)."""
    from PIL import Image

    if getattr(image, "_im", True) is None or image.width * image.height > COMPARE_PIXELS:
        return True
    try:
        mine = image.tobytes()
    except (ValueError, AssertionError):  # "Operation on closed image"
        return True
    try:
        with Image.open(filename) as on_disk:
            return bool(
                on_disk.size == image.size
                and on_disk.mode == image.mode
                and on_disk.tobytes() == mine
            )
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


#: Loaded PIL images up to this many pixels are compared with their file (see _same_pixels).
COMPARE_PIXELS = 16_000_000
