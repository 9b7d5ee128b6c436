"""Where an image's bytes come from: a file, a node (its path, base64 ``image`` or URL).

Ingestion, captioning and image queries all take image nodes; this is the one place that
says what a node's image is and reads it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .discovery import IMAGE_SUFFIXES
from .fetch import UrlRefusedError, fetch_public_url

if TYPE_CHECKING:  # LlamaIndex is imported when a node is looked at, not before
    from llama_index.core.schema import BaseNode, ImageDocument, ImageNode

#: Images fetched from an ``image_url`` larger than this are refused.
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024

#: Node metadata keys that hold an image's file path (LlamaIndex readers set file_path).
PATH_METADATA_KEYS = ("file_path",)


class ImageSourceError(ValueError):
    """A node whose image cannot be had; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageSource:
    """An image's origin: a file ``path``, or the bytes in ``data`` (decoded base64 or a
    fetched URL, then ``url`` says which)."""

    path: str = ""
    data: bytes | None = None
    url: str = ""

    def read(self) -> bytes:
        """The image's bytes (read from its file when it has one)."""
        if self.data is not None:
            return self.data
        try:
            with open(self.path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise ImageSourceError(f"cannot read file ({exc.strerror or exc})") from exc

    def sha256(self) -> str:
        """sha256 of the bytes (a file is streamed, not held)."""
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        try:
            return file_sha256(self.path)
        except OSError as exc:
            raise ImageSourceError(f"cannot read file ({exc.strerror or exc})") from exc


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, streamed."""
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def node_path(node: Any) -> str:
    """The file path an image node names (``image_path`` or ``metadata["file_path"]``)."""
    path = getattr(node, "image_path", None)
    if not path:
        metadata = getattr(node, "metadata", None) or {}
        path = next((metadata[k] for k in PATH_METADATA_KEYS if metadata.get(k)), None)
    return str(path or "")


def node_source(
    node: Any, *, allow_urls: bool = False, url_refusal: str | None = None
) -> ImageSource:
    """The image of an ``ImageNode`` / ``ImageDocument``: its file, its base64 ``image``,
    or (only with ``allow_urls``, public addresses only) its ``image_url``.

    Raises:
        ImageSourceError: the node has none of them, bad base64, or a URL that is not
            fetched (``url_refusal`` is the reason given then).
    """
    path = node_path(node)
    if path:
        return ImageSource(path=os.path.abspath(os.path.expanduser(path)))
    if getattr(node, "image", None):
        try:
            return ImageSource(data=base64.b64decode(node.image, validate=False))
        except (binascii.Error, ValueError) as exc:
            raise ImageSourceError("image field is not base64") from exc
    url = getattr(node, "image_url", None)
    if url:
        if not allow_urls:
            raise ImageSourceError(
                url_refusal
                or "image_url is not fetched unless allowed: download the image and pass its "
                "path, or use allow_image_urls=True (public addresses only)"
            )
        return ImageSource(data=download(str(url)), url=str(url))
    raise ImageSourceError("node has no image_path, image or image_url")


def download(url: str) -> bytes:
    """The bytes at ``url``, from public addresses only (see :mod:`.fetch`)."""
    try:
        return fetch_public_url(url, max_bytes=MAX_DOWNLOAD_BYTES, timeout=30)
    except UrlRefusedError as exc:
        raise ImageSourceError(f"image_url refused: {exc}") from exc
    except Exception as exc:
        raise ImageSourceError(f"cannot download image_url ({type(exc).__name__}: {exc})") from exc


def as_image_node(node: BaseNode) -> ImageNode | ImageDocument | None:
    """The node as an image, or None when it is not one.

    ``SimpleDirectoryReader`` without ``llama-index-readers-file`` reads a PNG as a plain
    ``Document`` whose text is the file's bytes, with ``file_type: image/png`` and
    ``file_path`` in its metadata: that is an image document too (the same id and
    metadata, its image read from ``file_path``, no binary text). A document with real
    text (a PNG parsed by an OCR reader) is text, not an image to caption."""
    from llama_index.core.schema import ImageDocument, ImageNode

    if isinstance(node, (ImageNode, ImageDocument)):
        return node
    metadata = node.metadata or {}
    path = metadata.get("file_path")
    file_type = str(metadata.get("file_type") or "")
    text = node.get_content()
    if not isinstance(path, str) or not path or (text.strip() and "\x00" not in text):
        return None
    if file_type and not file_type.startswith("image/"):
        return None  # the reader's mimetype says what it is
    if not file_type and Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    fields: dict[str, Any] = {
        "id_": node.id_,
        "metadata": dict(metadata),
        "excluded_llm_metadata_keys": list(node.excluded_llm_metadata_keys),
        "excluded_embed_metadata_keys": list(node.excluded_embed_metadata_keys),
        "relationships": dict(node.relationships),
    }
    try:
        return ImageDocument(image_path=path, **fields)
    except ValueError:  # not readable now: its metadata file_path says which file failed
        return ImageDocument(**fields)
