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
from typing import Any

from .fetch import UrlRefusedError, fetch_public_url

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
