"""Opening and finding images: bad files give a reason, odd ones are normalised."""

from __future__ import annotations

import os

import pytest
from llama_index.packs.clip_hybrid import ImageLoadError, discover_images, open_image
from llama_index.packs.clip_hybrid.testing.bad_images import make_odd_images


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
