"""A corpus of awkward and broken image files, built on demand (never checked in)."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class OddFile:
    path: Path
    #: None when the file is a valid image that must be indexed, else a word the
    #: skip reason must contain.
    expect_failure: str | None


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def make_odd_images(dest: str | Path) -> list[OddFile]:
    """Write broken files (to be skipped with a reason) and odd-but-valid ones."""
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    out: list[OddFile] = []

    def add(name: str, data: bytes, expect: str | None) -> None:
        path = root / name
        path.write_bytes(data)
        out.append(OddFile(path, expect))

    def encoded(img: Image.Image, fmt: str, **kw: object) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        return buf.getvalue()

    base = Image.new("RGB", (64, 48), (200, 40, 40))
    for x in range(0, 64, 8):
        for y in range(48):
            base.putpixel((x, y), (20, 20, 220))

    add("zero_bytes.png", b"", "empty")
    add("truncated.png", encoded(base, "PNG")[:60], "truncated")
    add("truncated.jpg", encoded(base, "JPEG")[:200], "truncated")
    add("page.jpg", b"<!doctype html><html><body>not an image</body></html>", "not an image")
    add("bomb.png", _png_with_size(40_000, 40_000), "decompression bomb")
    # Valid but awkward: all of these must be indexed.
    add("cmyk.jpg", encoded(base.convert("CMYK"), "JPEG"), None)
    sixteen = Image.new("I;16", (64, 48))
    sixteen.putdata([(i * 997) % 65535 for i in range(64 * 48)])
    add("sixteen_bit.png", encoded(sixteen, "PNG"), None)
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    add("palette_transparent.png", encoded(palette, "PNG", transparency=0), None)
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    add("animated.gif", encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]), None)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW on display
    add("exif_rotated.jpg", encoded(base, "JPEG", exif=exif), None)
    add("no_suffix_png", encoded(base, "PNG"), None)  # found by content sniffing
    add("grey.webp", encoded(base.convert("L"), "WEBP"), None)
    return out
