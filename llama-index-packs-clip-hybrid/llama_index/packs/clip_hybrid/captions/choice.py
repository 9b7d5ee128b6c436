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
    """The captioner for ``auto|openai|dashscope|ocr|none``, a Captioner, or an LLM
    (see :func:`choose_captioner`, which also says why)."""
    return choose_captioner(choice, model=model, language=language, prompt=prompt, detail=detail)[0]


def settings_llm() -> Any | None:
    """``Settings.llm`` when a user set one that is not a placeholder, else None. Read
    without resolving LlamaIndex's default (which would build an OpenAI LLM, or fail)."""
    from llama_index.core import Settings
    from llama_index.core.llms import LLM, MockLLM

    llm = getattr(Settings, "_llm", None)
    return llm if isinstance(llm, LLM) and not isinstance(llm, MockLLM) else None


def choose_captioner(
    choice: str | Captioner | Any = "auto",
    *,
    model: str | None = None,
    language: str | None = None,
    prompt: str | None = None,
    detail: str = "auto",
) -> tuple[Captioner | None, str]:
    """The captioner, and where the choice came from (``argument``, ``Settings.llm``,
    ``OPENAI_API_KEY``, ``DASHSCOPE_API_KEY``, ``no API key``).

    ``auto``: ``Settings.llm`` when one was set (it must take image blocks), else GPT-4o
    when ``OPENAI_API_KEY`` is set, else Qwen-VL-Max when ``DASHSCOPE_API_KEY`` is set,
    else OCR when ``rapidocr-onnxruntime`` is installed, else None (no captions). The
    choice is logged.
    """
    if isinstance(choice, Captioner):
        return choice, "argument"
    if not isinstance(choice, str):  # a LlamaIndex LLM that takes image blocks
        return LLMCaptioner(choice, **_llm_options(language, prompt, detail)), "argument"
    source = "argument"
    if choice == "auto":
        llm = settings_llm()
        if llm is not None:
            captioner = LLMCaptioner(llm, **_llm_options(language, prompt, detail))
            logger.info("Captions: %s (from Settings.llm).", captioner.name)
            return captioner, "Settings.llm"
        if os.environ.get("OPENAI_API_KEY"):
            choice, source = "openai", "OPENAI_API_KEY"
        elif os.environ.get("DASHSCOPE_API_KEY"):
            choice, source = "dashscope", "DASHSCOPE_API_KEY"
        elif OCRCaptioner.available():
            choice, source = "ocr", "no API key"
        else:
            logger.info("Captions: none (no OPENAI_API_KEY or DASHSCOPE_API_KEY, no OCR).")
            return None, "no API key"
        logger.info("Captions: %s (chosen automatically).", choice)
    return _named(choice, model, _llm_options(language, prompt, detail)), source


def _named(choice: str, model: str | None, options: dict[str, Any]) -> Captioner | None:
    if choice == "none":
        return None
    if choice == "openai":
        return LLMCaptioner.openai(model or "gpt-4o", **options)
    if choice == "dashscope":
        return LLMCaptioner.dashscope(model or "qwen-vl-max", **options)
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
