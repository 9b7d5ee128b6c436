"""The offline OCR captioner on rendered English and Chinese text (real PP-OCRv4 models)."""

from __future__ import annotations

import re

import pytest
from llama_index.core.schema import ImageNode
from llama_index.packs.clip_hybrid import CaptionImage, OCRCaptioner, VLMCaptionTransform
from llama_index.packs.clip_hybrid.captions.ocr import restore_spaces
from llama_index.packs.clip_hybrid.testing import find_cjk_font, require


@pytest.fixture(scope="module")
def ocr() -> OCRCaptioner:
    require(OCRCaptioner.available(), "rapidocr-onnxruntime (the ocr extra)")
    return OCRCaptioner()


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.upper()))


def test_reads_english_text(ocr: OCRCaptioner, sample_images) -> None:
    english = [s for s in sample_images if s.lang == "en"]
    for sample in english:
        read = ocr.read_text(sample.path.read_bytes())
        expected = _words(sample.text)
        found = _words(read.replace(" ", "")) | _words(read)
        joined = read.replace(" ", "").upper()
        # Every word is read (PP-OCR may merge two words; they are then found joined).
        assert all(w in found or w in joined for w in expected), (sample.text, read)


def test_reads_chinese_text(ocr: OCRCaptioner, sample_images) -> None:
    require(find_cjk_font() is not None, "a CJK font (fonts-wqy-microhei)")
    chinese = [s for s in sample_images if s.lang == "zh"]
    assert chinese
    for sample in chinese:
        assert ocr.read_text(sample.path.read_bytes()).replace(" ", "") == sample.text


def test_no_text_is_an_empty_caption_not_a_failure(
    ocr: OCRCaptioner, sample_images, tmp_path
) -> None:
    photo = next(s for s in sample_images if s.kind == "landscape_photo")
    text = next(s for s in sample_images if s.lang == "en")
    transform = VLMCaptionTransform(ocr, cache_path=str(tmp_path / "c.sqlite"))
    out = transform([ImageNode(image_path=str(photo.path)), ImageNode(image_path=str(text.path))])
    report = transform.last_report
    assert report is not None and report.failed == []
    captions = [n for n in out if "caption_source" in n.metadata]
    assert [c.metadata["image_path"] for c in captions] == [str(text.path)]
    assert captions[0].text.startswith("Text: ") and captions[0].metadata["caption_source"] == "ocr"
    assert report.captioned + report.empty == 2


def test_a_broken_image_is_reported(ocr: OCRCaptioner) -> None:
    transform = VLMCaptionTransform(ocr, cache_path=":memory:")
    outcomes, report = transform.caption_images([CaptionImage.from_bytes("x", b"\x89PNG broken")])
    assert outcomes[0].caption is None
    assert report.failed[0].reason.startswith("not a readable image")


def test_restore_spaces_uses_character_gaps() -> None:
    def boxes(spans):
        return [[[a, 0], [b, 0], [b, 9], [a, 9]] for a, b in spans]

    # "ABCD": a wide gap between B and C only.
    assert restore_spaces("ABCD", boxes([(0, 9), (10, 19), (30, 39), (40, 49)])) == "AB CD"
    assert restore_spaces("系统架构", boxes([(0, 9), (30, 39), (60, 69), (90, 99)])) == "系统架构"
    assert restore_spaces("AB", None) == "AB"


def test_an_image_the_engine_cannot_take_fails_once_not_five_times(ocr: OCRCaptioner) -> None:
    """A 20000x100 panorama: RapidOCR's resize makes its short side 0 px (ResizeImgError),
    the same on every try; it was retried five times as if it were a network error."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (20000, 100), "white").save(buf, format="PNG")
    transform = VLMCaptionTransform(ocr, cache_path=":memory:", backoff_base=0.01)
    outcomes, report = transform.caption_images([CaptionImage.from_bytes("p", buf.getvalue())])
    assert outcomes[0].caption is None
    assert report.failed[0].reason.startswith("OCR cannot read this image (")
    assert report.usage.retries == 0
