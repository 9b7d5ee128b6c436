"""Opening and finding images: bad files give a reason, odd ones are normalised."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from llama_index.packs.clip_hybrid import (
    ClipHybridPack,
    DatabaseBusyError,
    ImageLoadError,
    discover_images,
    open_image,
)
from llama_index.packs.clip_hybrid.hybrid.bm25 import CaptionBM25Index, CaptionText
from llama_index.packs.clip_hybrid.testing.bad_images import make_odd_images
from PIL import Image


@pytest.fixture
def odd(tmp_path):  # type: ignore[no-untyped-def]
    return make_odd_images(tmp_path / "odd")


def test_each_odd_file_opens_or_fails_with_its_reason(odd) -> None:  # type: ignore[no-untyped-def]
    for item in odd:
        if item.expect_failure is None:
            img = open_image(item.path)
            assert img.mode == "RGB", item.path.name
        else:
            with pytest.raises(ImageLoadError) as info:
                open_image(item.path)
            assert item.expect_failure in info.value.reason, (item.path.name, info.value.reason)
            assert info.value.path == str(item.path)


def test_exif_orientation_is_applied(odd) -> None:  # type: ignore[no-untyped-def]
    rotated = next(i for i in odd if i.path.name == "exif_rotated.jpg")
    assert open_image(rotated.path).size == (48, 64)  # stored 64x48, displayed upright


def test_transparency_is_composited_on_white(odd) -> None:  # type: ignore[no-untyped-def]
    palette = next(i for i in odd if i.path.name == "palette_transparent.png")
    img = open_image(palette.path)
    colours = {img.getpixel((x, y)) for x in range(64) for y in range(48)}
    assert (255, 255, 255) in colours or len(colours) <= 8


def test_discovery_sniffs_content_skips_hidden_and_survives_symlink_loops(tmp_path, odd) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "odd"
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(odd[5].path.read_bytes())
    (root / "sub").mkdir()
    os.symlink(root, root / "sub" / "loop")
    found = {p.name for p in discover_images([root])}
    assert "no_suffix_png" in found  # no suffix, PNG magic
    assert "page.jpg" in found  # claims to be an image: found, then reported as bad
    assert "notes.txt" not in found and ".hidden.png" not in found
    assert len(found) == len(odd)
    # An explicit file is always yielded, once, even when listed twice.
    assert len(list(discover_images([odd[0].path, odd[0].path]))) == 1


def test_big_jpegs_decode_at_a_reduced_scale_and_report_their_full_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (4000, 3000), (20, 120, 220)).save(photo, quality=70)
    full = open_image(photo)
    small = open_image(photo, min_side=700)
    assert full.size == (4000, 3000) and full.info["source_size"] == (4000, 3000)
    assert small.size == (1000, 750)  # 1/4 scale: both sides still >= 700
    assert small.info["source_size"] == (4000, 3000)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (4000, 3000), (20, 120, 220)).save(rotated, exif=exif)
    upright = open_image(rotated, min_side=700)
    assert upright.size == (750, 1000) and upright.info["source_size"] == (3000, 4000)
    png = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(png)
    assert open_image(png, min_side=700).size == (3000, 2000)  # only JPEG has DCT scaling


def _hostile_corpus(root: Path) -> tuple[dict[str, str], set[str]]:
    """Files under ``root``: {name: a word its failure reason must contain}, good names."""
    odd = make_odd_images(root / "odd")
    bad = {i.path.name: i.expect_failure for i in odd if i.expect_failure}
    good = {i.path.name for i in odd if not i.expect_failure}
    extra = root / "extra"
    extra.mkdir()

    def image(name: str | bytes, color: tuple[int, int, int], fmt: str = "PNG") -> None:
        target = os.path.join(os.fsencode(extra), os.fsencode(name))
        Image.new("RGB", (80, 60), color).save(target, format=fmt)

    image("png_named.jpg", (250, 0, 0))  # wrong extension, right content
    image("jpeg_named.png", (0, 250, 0), "JPEG")
    image("no_suffix_scan", (0, 0, 250))  # found by its magic bytes
    image("长" * 80 + ".png", (250, 250, 0))  # a 244-byte name
    image("twin_a.png", (7, 7, 7))
    shutil.copyfile(extra / "twin_a.png", extra / "twin_b.png")  # duplicate bytes
    good |= {"png_named.jpg", "jpeg_named.png", "no_suffix_scan", "长" * 80 + ".png"}
    good |= {"twin_a.png", "twin_b.png"}
    # 12000 x 9000: valid, huge; indexed (decoded once, shrunk before the model)
    Image.new("RGB", (12_000, 9_000), (30, 60, 90)).save(extra / "huge.jpg", quality=50)
    good.add("huge.jpg")

    image(b"caf\xe9.png", (1, 2, 3))  # a Latin-1 file name: not valid UTF-8
    bad["caf\\xe9.png"] = "not valid UTF-8"
    (extra / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    bad["logo.svg"] = "SVG"
    os.mkfifo(extra / "pipe.png")  # reading it would block forever
    bad["pipe.png"] = "not a regular file"
    os.symlink(extra / "nowhere.png", extra / "dangling.png")
    bad["dangling.png"] = "cannot read file"
    os.symlink(extra, extra / "loop")  # a folder symlink loop: not followed
    locked = extra / "locked.png"
    Image.new("RGB", (80, 60), (9, 9, 9)).save(locked)
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway
        good.add("locked.png")
    else:
        bad["locked.png"] = "permission denied"
    return bad, good


def test_hostile_corpus_ingests_every_good_image_and_names_every_bad_one(
    pack, tmp_path, caplog
) -> None:
    bad, good = _hostile_corpus(tmp_path / "corpus")
    with caplog.at_level(logging.DEBUG):
        report = pack.ingest(tmp_path / "corpus")
    failures = [(Path(f.path).name, f.reason) for f in report.failed]
    assert sorted(name for name, _ in failures) == sorted(bad)  # each bad file once
    for name, reason in failures:
        assert bad[name] in reason, (name, reason)
    indexed = {Path(row["path"]).name for row in pack.store.iter_rows(["path"])}
    assert indexed == good
    assert report.indexed == len(good)
    assert not [r for r in caplog.records if r.exc_info]  # no traceback anywhere
    huge = next(r for r in pack.store.iter_rows(["path", "width", "height"]) if "huge" in r["path"])
    assert (huge["width"], huge["height"]) == (12_000, 9_000)
    # the report is JSON-safe text, the undecodable name included
    assert all(f.path.encode("utf-8") for f in report.failed)


def _rle_bmp(width: int, height: int, bits: int, compression: int) -> bytes:
    """A BMP header claiming ``width x height`` RLE pixels, with 16 bytes of data."""
    import struct

    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, compression, 0, 2835, 2835, 0, 0)
    palette = b"\x00\x00\x00\x00" * (2**bits if bits <= 8 else 0)
    data = b"\x00\x01" * 8
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + palette + data


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ((3_473_664, 16, 24, 2), "corrupt BMP (RLE compression on a RGB image)"),  # the fuzz find
        ((20_000, 2_000, 8, 1), "too slow to decode"),
    ],
)
def test_rle_bmps_that_would_take_seconds_to_decode_are_refused_from_the_header(
    tmp_path, header, reason
) -> None:
    from llama_index.packs.clip_hybrid import ImageLoadError
    from llama_index.packs.clip_hybrid.images.decode import open_image

    path = tmp_path / "slow.bmp"
    path.write_bytes(_rle_bmp(*header))
    with pytest.raises(ImageLoadError) as info:  # refused from the header, before decoding
        open_image(path)
    assert reason in info.value.reason


def _tiff_with_a_float_strip_offset() -> bytes:
    """A 4x4 TIFF whose StripOffsets tag is typed FLOAT (the fuzzer's find): Pillow 13
    raises TypeError from ImageFile.load instead of one of its usual errors."""
    import io
    import struct

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, format="TIFF")
    data = bytearray(buf.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    (entries,) = struct.unpack_from("<H", data, ifd)
    for i in range(entries):
        at = ifd + 2 + 12 * i
        tag, _, count = struct.unpack_from("<HHI", data, at)
        if tag == 273:
            offset = struct.unpack_from("<I", data, at + 8)[0]
            struct.pack_into("<HHIf", data, at, tag, 11, count, float(offset))
    return bytes(data)


def test_a_hostile_tiff_is_a_named_failure_not_a_crash(pack, image_dir) -> None:
    (image_dir / "float_offset.tif").write_bytes(_tiff_with_a_float_strip_offset())
    report = pack.ingest(image_dir)
    (failure,) = report.failed
    assert (
        failure.path.endswith("float_offset.tif") and "corrupt image (TypeError" in failure.reason
    )
    assert report.indexed == len(list(image_dir.rglob("*.png")))


def test_a_big_photo_queried_again_scores_exactly_its_indexed_vector(pack, tmp_path) -> None:
    """Ingestion and image queries shrink an image the same way (big JPEGs decoded at a
    reduced scale), so the query's self-hit is the indexed vector itself: cosine 1.0."""
    import numpy as np

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(8)
    for i in range(3):
        small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(small).resize((4000, 3000)).save(folder / f"p{i}.jpg", quality=80)
    pack.ingest(folder)
    hits = pack.search(folder / "p1.jpg", mode="image", keep_self_hit=True).hits
    top = hits[0]
    assert top.node.metadata["file_path"].endswith("p1.jpg")
    assert top.score == pytest.approx(1.0, abs=1e-5)


def test_a_fifo_without_a_suffix_does_not_hang_the_folder_scan(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Files without an image suffix are sniffed for magic bytes; opening a FIFO to read
    them waited for a writer for ever. The scan runs on a thread the test can give up on."""
    import threading

    from llama_index.packs.clip_hybrid.images.discovery import discover_images

    Image.new("RGB", (8, 8)).save(tmp_path / "scan0001", format="PNG")
    os.mkfifo(tmp_path / "pipe_noext")
    found: list[Path] = []
    scan = threading.Thread(target=lambda: found.extend(discover_images([tmp_path])), daemon=True)
    scan.start()
    scan.join(timeout=60)  # returns as soon as the scan ends; 60 s only if it hangs
    if scan.is_alive():
        with open(tmp_path / "pipe_noext", "wb"):  # a writer frees the stuck open()
            pass
        pytest.fail("the folder scan blocked on a FIFO")
    assert [p.name for p in found] == ["scan0001"]
