"""LLMCaptioner: a vision LLM (GPT-4o, Qwen-VL-Max, any LlamaIndex LLM taking image blocks)."""

from __future__ import annotations

import asyncio
import io
import os
from typing import Any, Literal

from PIL import Image

from .._compat.openai_event_loop import forget_client_of_closed_loop
from ..images.decode import DEFAULT_MAX_PIXELS, ImageLoadError, open_image, probe_image
from ..redaction import register_secret
from .base import (
    DEFAULT_CAPTION_PROMPT,
    Caption,
    Captioner,
    CaptionError,
    CaptionImage,
    build_prompt,
)
from .errors import classify_error

OPENAI_DEFAULT_MODEL = "gpt-4o"
DASHSCOPE_DEFAULT_MODEL = "qwen-vl-max"
DASHSCOPE_COMPATIBLE_BASE_URL = "https://dashscope.aliyuncs.com/compatible-mode/v1"

Detail = Literal["low", "high", "auto"]


class LLMCaptioner(Captioner):
    """Caption with any LlamaIndex LLM that accepts ``ImageBlock``s in chat messages.

    The image is downscaled to what the model bills for before it is sent (see
    :func:`prepare_image`). Build one for a provider with :meth:`openai` or
    :meth:`dashscope`; those turn off the client's own retries, so that the transform's
    backoff (which honours Retry-After) is the only one.

    Args:
        llm: The LLM, e.g. ``OpenAI(model="gpt-4o")``.
        name: Provider and model for reports and the cache key.
        prompt: The instruction (default :data:`DEFAULT_CAPTION_PROMPT`).
        language: Caption language (``"zh"``, ``"en"`` or a language name); None keeps
            the prompt's own wording (text is transcribed in its own language anyway).
        detail: OpenAI image detail (``low`` = 512 px, 85 tokens; ``high``/``auto`` =
            up to 768 px on the short side, 2048 on the long side).
        max_pixels: Pixel budget for models billed per pixel area (Qwen-VL: 1280 tiles of
            28x28); the image is shrunk to fit. None uses the ``detail`` rule.
    """

    def __init__(
        self,
        llm: Any,
        *,
        name: str | None = None,
        prompt: str = DEFAULT_CAPTION_PROMPT,
        language: str | None = None,
        detail: Detail = "auto",
        max_pixels: int | None = None,
    ) -> None:
        if detail not in ("low", "high", "auto"):
            raise ValueError(f"detail={detail!r} is not one of 'low', 'high', 'auto'.")
        self.llm = llm
        model = getattr(llm, "model", None) or getattr(llm, "model_name", None) or "llm"
        self.name = name or f"{type(llm).__name__.lower()}:{model}"
        self.prompt = prompt
        self.language = language
        self.detail: Detail = detail
        self.max_pixels = max_pixels

    @classmethod
    def openai(
        cls,
        model: str = OPENAI_DEFAULT_MODEL,
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        **kwargs: Any,
    ) -> LLMCaptioner:
        """GPT-4o (or another OpenAI vision model). Key and base URL default to the
        ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` environment variables."""
        from .._compat.openai_secrets import RedactedOpenAI

        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ValueError("The OpenAI captioner needs OPENAI_API_KEY (or api_key=...).")
        register_secret(key)
        base = api_base or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
        llm = RedactedOpenAI(
            model=model,
            api_key=key,
            api_base=base,
            max_retries=0,
            timeout=kwargs.pop("timeout", 120.0),
            temperature=0.0,
            max_tokens=kwargs.pop("max_tokens", 400),
        )
        _import_openai_resources()
        return cls(llm, name=f"openai:{model}", **kwargs)

    @classmethod
    def dashscope(
        cls,
        model: str = DASHSCOPE_DEFAULT_MODEL,
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        **kwargs: Any,
    ) -> LLMCaptioner:
        """Qwen-VL-Max (or another Qwen-VL model) through DashScope's OpenAI-compatible
        endpoint. Key and base URL default to ``DASHSCOPE_API_KEY`` and
        ``DASHSCOPE_BASE_URL`` (international accounts use
        ``https://dashscope-intl.aliyuncs.com/compatible-mode/v1``)."""
        from .._compat.openai_secrets import RedactedOpenAILike

        key = api_key or os.environ.get("DASHSCOPE_API_KEY")
        if not key:
            raise ValueError("The DashScope captioner needs DASHSCOPE_API_KEY (or api_key=...).")
        register_secret(key)
        base = api_base or os.environ.get("DASHSCOPE_BASE_URL") or DASHSCOPE_COMPATIBLE_BASE_URL
        llm = RedactedOpenAILike(
            model=model,
            api_key=key,
            api_base=base,
            is_chat_model=True,
            context_window=32768,
            max_retries=0,
            timeout=kwargs.pop("timeout", 120.0),
            temperature=0.0,
            max_tokens=kwargs.pop("max_tokens", 400),
        )
        kwargs.setdefault("max_pixels", 1280 * 28 * 28)
        _import_openai_resources()
        return cls(llm, name=f"dashscope:{model}", **kwargs)

    @property
    def settings(self) -> dict[str, Any]:
        llm = self.llm
        return {
            "name": self.name,
            "prompt": self.prompt,
            "language": self.language,
            "detail": self.detail,
            "max_pixels": self.max_pixels,
            # what else changes the answer: the endpoint and the generation settings
            "api_base": str(getattr(llm, "api_base", "") or ""),
            "max_tokens": getattr(llm, "max_tokens", None),
            "temperature": getattr(llm, "temperature", None),
        }

    async def acaption(self, image: CaptionImage, *, timeout: float) -> Caption:
        from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock

        data, mimetype = await asyncio.to_thread(
            prepare_image, image.data, detail=self.detail, max_pixels=self.max_pixels
        )
        message = ChatMessage(
            role="user",
            blocks=[
                TextBlock(text=build_prompt(self.prompt, self.language)),
                ImageBlock(image=data, image_mimetype=mimetype, detail=self.detail),
            ],
        )
        forget_client_of_closed_loop(self.llm)
        try:
            response = await asyncio.wait_for(self.llm.achat([message]), timeout)
        except Exception as exc:
            raise classify_error(exc, timeout) from exc
        text = (response.message.content or "").strip()
        usage = response.additional_kwargs or {}
        return Caption(
            text=text,
            prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
            completion_tokens=_int_or_none(usage.get("completion_tokens")),
        )


def _import_openai_resources() -> None:
    """Import the openai client's API resources now (seconds on a small CPU) rather than
    inside the first request, where they would stall every request of the first wave."""
    import openai.resources.chat  # noqa: F401


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def prepare_image(
    data: bytes,
    *,
    detail: Detail = "auto",
    max_pixels: int | None = None,
    limit_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[bytes, str]:
    """The image as the model should receive it: no bigger than what it bills for.

    OpenAI (``max_pixels=None``): ``low`` fits 512x512; ``high``/``auto`` fit 2048x2048,
    then the short side to 768. With ``max_pixels`` (Qwen-VL), the area is shrunk to fit.
    Images already small enough in PNG/JPEG/WEBP/GIF are sent as they are; others are
    re-encoded (JPEG for photos, PNG when there is transparency or few colours).

    Raises:
        CaptionError: the bytes are not a readable image (not retryable).
    """
    try:
        header = probe_image(data, max_pixels=limit_pixels)
        fmt = header.format.upper()
        scale = _scale(header.width, header.height, detail, max_pixels)
        if scale >= 1.0 and fmt in ("PNG", "JPEG", "WEBP", "GIF"):
            return data, Image.MIME[fmt]
        img = open_image(data, max_pixels=limit_pixels)
    except ImageLoadError as exc:
        if exc.problem == "too_large":
            raise CaptionError(f"image too large ({header_size(data)})") from exc
        raise CaptionError(f"not a readable image ({exc.reason})") from exc
    if scale < 1.0:
        # floor (plus float slack): the area must stay within the budget
        width, height = img.size
        size = (max(1, int(width * scale + 1e-6)), max(1, int(height * scale + 1e-6)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return _encode(img, fmt)


def header_size(data: bytes) -> str:
    """``WIDTHxHEIGHT`` from an image's header, for messages ("?" if unreadable)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return f"{img.size[0]}x{img.size[1]}"
    except Exception:
        return "?"


def _scale(width: int, height: int, detail: Detail, max_pixels: int | None) -> float:
    if max_pixels is not None:
        area = width * height
        return min(1.0, (max_pixels / area) ** 0.5) if area else 1.0
    if detail == "low":
        return min(1.0, 512 / max(width, height))
    scale = min(1.0, 2048 / max(width, height))
    short = min(width, height) * scale
    if short > 768:
        scale *= 768 / short
    return scale


def _encode(img: Image.Image, fmt: str) -> tuple[bytes, str]:
    buf = io.BytesIO()
    has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    if fmt == "JPEG" or (not has_alpha and fmt not in ("PNG", "GIF") and img.mode != "P"):
        img.convert("RGB").save(buf, format="JPEG", quality=90)
        return buf.getvalue(), "image/jpeg"
    if img.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        img = img.convert("RGBA" if has_alpha else "RGB")
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue(), "image/png"
