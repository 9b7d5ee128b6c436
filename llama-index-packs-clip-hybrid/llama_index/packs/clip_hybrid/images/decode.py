"""Finding image files and opening them safely: one bad file never sinks a batch."""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
)

#: Vector images: found in folders so that each is reported (CLIP needs pixels), not indexed.
VECTOR_SUFFIXES = frozenset({".svg", ".svgz"})

#: Images above this many pixels are refused as likely decompression bombs (PIL's own
#: limit is ~179M and only warns below it). 12000 x 9000 = 108M passes.
DEFAULT_MAX_PIXELS = 150_000_000

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


class ImageLoadError(ValueError):
    """An image file that cannot be indexed; ``reason`` says why in a few words."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def sniff_image(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with the magic bytes of a supported image format."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    return any(head[offset : offset + len(magic)] == magic for magic, offset in _MAGIC)


def discover_images(
    inputs: Iterable[str | os.PathLike[str]], *, recursive: bool = True
) -> Iterator[Path]:
    """Yield image files under ``inputs`` (files or folders), each absolute path once.

    In folders, a file is taken when its suffix is an image suffix or its first bytes are
    an image's magic number (so ``scan0001`` without a suffix is found); hidden files and
    folders are skipped and symlinked folders are not followed (no loops); a symlinked file
    and its target are two paths, both yielded (each keeps its own row). SVG files are
    yielded too, so that each is reported as unsupported rather than silently left out. A path given
    explicitly is always yielded, so that a bad one is reported rather than ignored.
    """
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
        for folder, dirs, files in os.walk(root, followlinks=False):
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


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, streamed."""
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def open_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Open, check and normalise an image to 8-bit RGB, or raise :class:`ImageLoadError`.

    EXIF orientation is applied; palette, transparency (composited on white), CMYK,
    16-bit and greyscale images are converted; animated images give their first frame.

    ``min_side``: the caller needs no more than this many pixels on each side, so a JPEG
    may be decoded at 1/2, 1/4 or 1/8 scale (DCT scaling) while both sides stay at least
    ``min_side``: a 12000x9000 photo then costs 5 MB instead of 324 MB. The full size is
    in ``image.info["source_size"]`` (in the image's final orientation).
    """
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ImageLoadError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL warns from 89M pixels; our own max_pixels decides (12000 x 9000 is fine).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
            width, height = img.size
            if width * height > max_pixels:
                raise ImageLoadError(
                    path,
                    f"decompression bomb: {width}x{height} pixels is over max_pixels={max_pixels}",
                )
            _refuse_slow_rle_bmp(path, img)
            img.seek(0)
            full_size = img.size
            if min_side and img.format == "JPEG":
                img.draft(img.mode, (min_side, min_side))
            img.load()
            decoded_size = img.size
    except ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        if Path(path).suffix.lower() in VECTOR_SUFFIXES:
            raise ImageLoadError(
                path, "SVG (vector) images are not supported; export it as PNG to index it"
            ) from exc
        raise ImageLoadError(path, "not an image (format not recognised)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(path, f"decompression bomb ({exc})") from exc
    except PermissionError as exc:
        raise ImageLoadError(path, "permission denied") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(path, f"truncated or corrupt image ({exc})") from exc
    except MemoryError as exc:
        raise ImageLoadError(path, "too large to decode in the memory available") from exc
    except Exception as exc:  # Pillow lets others through on hostile headers (fuzzing found
        # a TIFF whose float strip offset raises TypeError in ImageFile.load, Pillow 13.0)
        raise ImageLoadError(path, f"corrupt image ({type(exc).__name__}: {exc})") from exc
    out = to_rgb(img)
    # EXIF rotation may have swapped the sides: report the full size the same way round
    swapped = out.size != decoded_size and out.size == decoded_size[::-1]
    out.info["source_size"] = full_size[::-1] if swapped else full_size
    return out


#: Pillow decodes RLE-compressed BMPs in pure Python, a byte at a time (Pillow 13), so the
#: time grows with the pixels the header claims, not with the file: cap them.
MAX_RLE_BMP_PIXELS = 30_000_000


def _refuse_slow_rle_bmp(path: str | os.PathLike[str], img: Image.Image) -> None:
    """Found by benchmarks/fuzz_images.py: a 310-byte BMP claiming 3473664x16 RGB pixels in
    RLE4 held open_image for 2.6 s before failing. Real RLE BMPs are 4/8-bit palette images."""
    if not any(tile.codec_name == "bmp_rle" for tile in getattr(img, "tile", ())):
        return
    if img.mode not in ("P", "L"):
        raise ImageLoadError(path, f"corrupt BMP (RLE compression on a {img.mode} image)")
    width, height = img.size
    if width * height > MAX_RLE_BMP_PIXELS:
        raise ImageLoadError(
            path, f"RLE BMP of {width}x{height} pixels is too slow to decode; convert it to PNG"
        )


#: The largest side an image keeps before CLIP (which needs 224): ingestion and image
#: queries both shrink to it the same way, so an indexed image queried again gets the
#: very same pixels, hence the same vector.
WORKING_SIDE = 1024


def working_image(img: Image.Image) -> Image.Image:
    """``img`` shrunk (in place, keeping its aspect) to at most ``WORKING_SIDE`` a side."""
    if max(img.size) > WORKING_SIDE:
        img.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BICUBIC)
    return img


def open_working_image(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """:func:`open_image` at the working size (big JPEGs decoded at a reduced scale)."""
    return working_image(open_image(path, max_pixels=max_pixels, min_side=WORKING_SIDE))


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB with EXIF orientation applied."""
    with contextlib.suppress(Exception):  # a broken EXIF block should not cost the image
        img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than clip.
        img = img.point(lambda v: v / 256).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img
