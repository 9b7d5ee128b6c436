"""Finding image files in folders, and the stable ids images are stored under."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
)

#: Vector images: found in folders so that each is reported (CLIP needs pixels), not indexed.
VECTOR_SUFFIXES = frozenset({".svg", ".svgz"})

# Magic numbers of the formats above, for files whose extension does not say "image".
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", 0),
    (b"\xff\xd8\xff", 0),
    (b"GIF87a", 0),
    (b"GIF89a", 0),
    (b"BM", 0),
    (b"II*\x00", 0),
    (b"MM\x00*", 0),
    (b"WEBP", 8),
)


def sniff_image(path: str | os.PathLike[str]) -> bool:
    """True when the path is a regular file that starts with the magic bytes of a
    supported image format. Opened without blocking and checked before reading: a FIFO
    (or a device) in a folder must not hang the scan waiting for a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, 16)
    except OSError:
        return False
    finally:
        os.close(fd)
    return any(head[offset : offset + len(magic)] == magic for magic, offset in _MAGIC)


def discover_images(
    inputs: Iterable[str | os.PathLike[str]],
    *,
    recursive: bool = True,
    on_error: Callable[[str, str], None] | None = None,
) -> Iterator[Path]:
    """Yield image files under ``inputs`` (files or folders), each absolute path once.

    In folders, a file is taken when its suffix is an image suffix or its first bytes are
    an image's magic number (so ``scan0001`` without a suffix is found); hidden files and
    folders are skipped and symlinked folders are not followed (no loops); a symlinked file
    and its target are two paths, both yielded (each keeps its own row). SVG files are
    yielded too, so that each is reported as unsupported rather than silently left out. A path given
    explicitly is always yielded, so that a bad one is reported rather than ignored.
    A folder that cannot be listed is passed to ``on_error(folder, reason)``.
    """

    def walk_error(exc: OSError) -> None:
        if on_error is not None:
            reason = "permission denied" if isinstance(exc, PermissionError) else str(exc)
            on_error(str(exc.filename or ""), f"cannot list this folder ({reason})")

    seen: set[str] = set()

    def once(path: Path) -> Iterator[Path]:
        key = os.path.normpath(path)
        if key not in seen:
            seen.add(key)
            yield path

    for raw in inputs:
        root = Path(raw).expanduser()
        if not root.is_dir():
            yield from once(root.absolute())
            continue
        for folder, dirs, files in os.walk(root, followlinks=False, onerror=walk_error):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if not recursive:
                dirs[:] = []
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = Path(folder, name).absolute()
                suffix = path.suffix.lower()
                if suffix in IMAGE_SUFFIXES or suffix in VECTOR_SUFFIXES or sniff_image(path):
                    yield from once(path)


#: Namespace of image node ids: uuid5(namespace, absolute path) for files,
#: uuid5(namespace, "sha256:<digest>") for in-memory images.
ID_NAMESPACE = uuid.UUID("5b0f7a52-6a43-4a8e-9a77-3c1f6b2d9e41")


def image_node_id(path: str | os.PathLike[str]) -> str:
    """The deterministic node id of an image file (from its absolute path)."""
    return str(uuid.uuid5(ID_NAMESPACE, os.path.abspath(os.fspath(path))))


def bytes_node_id(digest: str) -> str:
    """The deterministic node id of an in-memory image (from its bytes' sha256)."""
    return str(uuid.uuid5(ID_NAMESPACE, f"sha256:{digest}"))


def printable_path(path: str | os.PathLike[str]) -> str:
    """A path as valid text: undecodable bytes of a file name become ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
