"""THE image decoder: bytes or files to 8-bit RGB under pixel limits, or a named ImageLoadError."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from .discovery import VECTOR_SUFFIXES

# PIL warns from 89M pixels; our own max_pixels decides (12000 x 9000 is fine). One narrow
# filter, set once: catch_warnings() around each decode saved and restored the process's
# filters from every decode thread at once, which is not thread-safe (filters leaked, and
# the warning escaped a neighbour thread's window).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning, module=r"PIL\.")

#: Images above this many pixels are refused as likely decompression bombs (PIL's own
#: limit is ~179M and only warns below it). 12000 x 9000 = 108M passes.
DEFAULT_MAX_PIXELS = 150_000_000

#: What an image can be read from: a path, its bytes, or a binary file object.
ImageInput = str | os.PathLike[str] | bytes | bytearray | IO[bytes]

#: Why an image was refused: too many pixels (a caller may answer 413), or anything else.
Problem = Literal["too_large", "unreadable"]


class ImageLoadError(ValueError):
    """An image that cannot be used; ``reason`` says why in a few words and ``problem``
    is ``"too_large"`` (over the pixel limit) or ``"unreadable"``."""

    def __init__(
        self, path: str | os.PathLike[str], reason: str, problem: Problem = "unreadable"
    ) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.problem = problem
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding its pixels."""

    width: int
    height: int
    format: str
    mode: str


def _label(source: ImageInput, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return "<in-memory image>"


@contextlib.contextmanager
def _opened(source: ImageInput, *, max_pixels: int, name: str | None) -> Iterator[Image.Image]:
    """The image opened (header read, pixels not decoded) after every check that needs no
    decoding: readable, not empty, at most ``max_pixels``, not a slow RLE BMP. Pillow's
    errors while the caller decodes inside the block become :class:`ImageLoadError`, and
    close the image; otherwise it stays open for the caller (Pillow closes a file it
    opened itself once a single-frame image is loaded)."""
    label = _label(source, name)
    if isinstance(source, (str, os.PathLike)):
        try:
            size = os.path.getsize(source)
        except OSError as exc:
            raise ImageLoadError(label, f"cannot read file ({exc.strerror or exc})") from exc
        opened: object = source
    elif isinstance(source, (bytes, bytearray)):
        size = len(source)
        opened = io.BytesIO(source)
    else:
        size = -1  # a file object: its length is not asked for
        opened = source
    if size == 0:
        raise ImageLoadError(label, "empty file (0 bytes)")
    try:
        img = Image.open(opened)  # type: ignore[arg-type]
        try:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageLoadError(
                    label,
                    f"decompression bomb: {width}x{height} pixels is over max_pixels={max_pixels}",
                    problem="too_large",
                )
            _refuse_slow_rle_bmp(label, img)
            yield img
        except BaseException:
            img.close()
            raise
    except ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        if Path(label).suffix.lower() in VECTOR_SUFFIXES:
            raise ImageLoadError(
                label, "SVG (vector) images are not supported; export it as PNG to index it"
            ) from exc
        raise ImageLoadError(label, "not an image (format not recognised)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(label, f"decompression bomb ({exc})", problem="too_large") from exc
    except PermissionError as exc:
        raise ImageLoadError(label, "permission denied") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(label, f"truncated or corrupt image ({exc})") from exc
    except MemoryError as exc:
        raise ImageLoadError(label, "too large to decode in the memory available") from exc
    except Exception as exc:  # Pillow lets others through on hostile headers (fuzzing found
        # a TIFF whose float strip offset raises TypeError in ImageFile.load, Pillow 13.0)
        raise ImageLoadError(label, f"corrupt image ({type(exc).__name__}: {exc})") from exc


def probe_image(
    source: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> ImageHeader:
    """The image's size, format and mode from its header, with the checks of
    :func:`open_image` that need no decoding (size limit included)."""
    with _opened(source, max_pixels=max_pixels, name=name) as img:
        header = ImageHeader(img.size[0], img.size[1], img.format or "", img.mode)
    img.close()
    return header


def open_image(
    source: ImageInput,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    name: str | None = None,
) -> Image.Image:
    """Open, check and normalise an image to 8-bit RGB, or raise :class:`ImageLoadError`.

    ``source`` is a path, the image's bytes or a binary file object; ``name`` labels it
    in errors (default: the path, or ``<in-memory image>``). EXIF orientation is applied;
    palette, transparency (composited on white), CMYK, 16-bit and greyscale images are
    converted; animated images give their first frame.

    ``min_side``: the caller needs no more than this many pixels on each side, so a JPEG
    may be decoded at 1/2, 1/4 or 1/8 scale (DCT scaling) while both sides stay at least
    ``min_side``: a 12000x9000 photo then costs 5 MB instead of 324 MB. The full size is
    in ``image.info["source_size"]`` (in the image's final orientation).
    """
    with _opened(source, max_pixels=max_pixels, name=name) as img:
        img.seek(0)
        full_size = img.size
        if min_side and img.format == "JPEG":
            img.draft(img.mode, (min_side, min_side))
        img.load()
        decoded_size = img.size
        out = to_rgb(img)
    # EXIF rotation may have swapped the sides: report the full size the same way round
    swapped = out.size != decoded_size and out.size == decoded_size[::-1]
    out.info["source_size"] = full_size[::-1] if swapped else full_size
    return out


#: Pillow decodes RLE-compressed BMPs in pure Python, a byte at a time (Pillow 13), so the
#: time grows with the pixels the header claims, not with the file: cap them.
MAX_RLE_BMP_PIXELS = 30_000_000


def _refuse_slow_rle_bmp(path: str, img: Image.Image) -> None:
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
    source: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> Image.Image:
    """:func:`open_image` at the working size (big JPEGs decoded at a reduced scale)."""
    return working_image(
        open_image(source, max_pixels=max_pixels, min_side=WORKING_SIDE, name=name)
    )


def thumbnail(
    source: ImageInput, side: int, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """A small RGB copy (at most ``side`` pixels a side), decoded at a reduced scale where
    the format allows it (JPEG), with the same limits as everything else."""
    img = open_image(source, max_pixels=max_pixels, min_side=side)
    img.thumbnail((side, side))
    return img


#: The EXIF tag that says how an image is turned.
EXIF_ORIENTATION = 0x0112


def displayed_size(source: ImageInput) -> tuple[int, int]:
    """(width, height) as the image is shown (EXIF-turned), from its header; (0, 0) when
    it cannot be read."""
    try:
        opened = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        with Image.open(opened) as img:
            width, height = img.size
            if img.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):  # turned a quarter
                return height, width  # as open_image gives it
            return width, height
    except Exception:
        return 0, 0


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
