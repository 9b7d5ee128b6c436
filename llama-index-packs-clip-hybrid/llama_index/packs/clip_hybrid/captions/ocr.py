"""OCRCaptioner: the text in an image, read offline (rapidocr-onnxruntime, Chinese and English)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ..images.decode import DEFAULT_MAX_PIXELS, ImageLoadError, open_image
from .base import Caption, Captioner, CaptionError, CaptionImage


class OCRCaptioner(Captioner):
    """Offline in-image text with ``rapidocr-onnxruntime`` (``pip install '...[ocr]'``).

    The caption is ``Text:`` followed by the lines read, top to bottom, left to right.
    An image without text gives an empty caption (not a failure). The engine loads on
    first use; calls run one at a time on a worker thread (ONNX Runtime already uses
    every core for one image).

    Args:
        min_score: Lines read with a lower confidence are dropped.
    """

    empty_is_failure = False
    source = "ocr"

    def __init__(self, *, min_score: float = 0.5) -> None:
        self.min_score = min_score
        self._engine: Any = None
        self._lock = threading.Lock()
        try:
            from importlib.metadata import version

            self.name = f"ocr:rapidocr-onnxruntime-{version('rapidocr-onnxruntime')}"
        except Exception:
            self.name = "ocr:rapidocr-onnxruntime"

    @staticmethod
    def available() -> bool:
        """True when ``rapidocr_onnxruntime`` is installed."""
        import importlib.util

        return importlib.util.find_spec("rapidocr_onnxruntime") is not None

    @property
    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "min_score": self.min_score}

    async def acaption(self, image: CaptionImage, *, timeout: float) -> Caption:
        text = await asyncio.to_thread(self.read_text, image.data)
        return Caption(text=f"Text: {text}" if text else "")

    def read_text(self, data: bytes) -> str:
        """The text lines in the image, in reading order, one per line."""
        import numpy as np

        try:
            img = open_image(data, max_pixels=DEFAULT_MAX_PIXELS)
        except ImageLoadError as exc:
            raise CaptionError(f"not a readable image ({exc.reason})") from exc
        array = np.asarray(img)[:, :, ::-1]  # RapidOCR wants BGR
        with self._lock:
            engine = self._load()
            try:
                result, _ = engine(np.ascontiguousarray(array), return_word_box=True)
            except Exception as exc:
                # RapidOCR's ResizeImgError (a 20000x100 panorama's short side rounds to
                # 0 px) is the same on every try: not retried. Anything else may pass.
                if type(exc).__name__ != "ResizeImgError":
                    raise
                reason = f"OCR cannot read this image ({type(exc).__name__}: {exc})"
                raise CaptionError(reason[:300]) from exc
        lines = []
        for entry in result or []:
            box, text, score = entry[0], str(entry[1]), float(entry[2])
            if score < self.min_score or not text.strip():
                continue
            words = entry[3] if len(entry) > 3 else None
            top = min(p[1] for p in box)
            left = min(p[0] for p in box)
            lines.append((top, left, restore_spaces(text, words)))
        lines.sort(key=lambda line: (round(line[0] / 8), line[1]))
        return "\n".join(text for _, _, text in lines)

    def _load(self) -> Any:
        if self._engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:
                raise CaptionError(
                    "OCR needs rapidocr-onnxruntime: pip install "
                    "'llama-index-packs-clip-hybrid[ocr]'",
                    fatal=True,
                ) from exc
            self._engine = RapidOCR()
        return self._engine


def restore_spaces(text: str, char_boxes: Any) -> str:
    """Put back the spaces between Latin words that PP-OCR's Chinese model drops.

    RapidOCR returns one box per character with ``return_word_box=True``; a gap between
    two Latin characters wider than 70% of the median character width is a space
    (measured on the sample images: it finds most word breaks and splits no word; the
    character boxes are approximate, so a tight word break can still be missed).
    CJK text is left as it is (it has no spaces).
    """
    if not char_boxes or " " in text or len(char_boxes) != len(text):
        return text
    try:
        spans = [(min(p[0] for p in b), max(p[0] for p in b)) for b in char_boxes]
    except (TypeError, IndexError, ValueError):
        return text
    widths = sorted(right - left for left, right in spans)
    median = widths[len(widths) // 2] or 1
    out = [text[0]]
    for i in range(1, len(text)):
        gap = spans[i][0] - spans[i - 1][1]
        latin = text[i - 1].isascii() and text[i].isascii()
        if latin and gap > 0.7 * median:
            out.append(" ")
        out.append(text[i])
    return "".join(out)
