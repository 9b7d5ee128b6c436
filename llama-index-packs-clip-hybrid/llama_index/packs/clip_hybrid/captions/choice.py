"""Which captioner runs: GPT-4o or Qwen-VL-Max with a key, offline OCR without, or one given."""

from __future__ import annotations

import os
from typing import Any

from ..redaction import package_logger
from .base import Captioner
from .llm import LLMCaptioner
from .ocr import OCRCaptioner

logger = package_logger(__name__)


def resolve_captioner(
    choice: str | Captioner | Any = "auto",
    *,
    model: str | None = None,
    language: str | None = None,
    prompt: str | None = None,
    detail: str = "auto",
) -> Captioner | None:
    """The captioner for ``auto|openai|dashscope|ocr|none``, a Captioner, or an LLM.

    ``auto``: GPT-4o when ``OPENAI_API_KEY`` is set, else Qwen-VL-Max when
    ``DASHSCOPE_API_KEY`` is set, else OCR when ``rapidocr-onnxruntime`` is installed,
    else None (no captions). The choice is logged.
    """
    if isinstance(choice, Captioner):
        return choice
    if not isinstance(choice, str):  # a LlamaIndex LLM that takes image blocks
        return LLMCaptioner(choice, **_llm_options(language, prompt, detail))
    if choice == "auto":
        if os.environ.get("OPENAI_API_KEY"):
            choice = "openai"
        elif os.environ.get("DASHSCOPE_API_KEY"):
            choice = "dashscope"
        elif OCRCaptioner.available():
            choice = "ocr"
        else:
            logger.info("Captions: none (no OPENAI_API_KEY or DASHSCOPE_API_KEY, no OCR).")
            return None
        logger.info("Captions: %s (chosen automatically).", choice)
    if choice == "none":
        return None
    if choice == "openai":
        return LLMCaptioner.openai(model or "gpt-4o", **_llm_options(language, prompt, detail))
    if choice == "dashscope":
        return LLMCaptioner.dashscope(
            model or "qwen-vl-max", **_llm_options(language, prompt, detail)
        )
    if choice == "ocr":
        if not OCRCaptioner.available():
            raise ValueError(
                "captioner='ocr' needs rapidocr-onnxruntime: "
                "pip install 'llama-index-packs-clip-hybrid[ocr]' (Python < 3.13)."
            )
        return OCRCaptioner()
    raise ValueError(f"captioner={choice!r} is not one of auto, openai, dashscope, ocr, none.")


def _llm_options(language: str | None, prompt: str | None, detail: str) -> dict[str, Any]:
    options: dict[str, Any] = {"language": language, "detail": detail}
    if prompt:
        options["prompt"] = prompt
    return options
