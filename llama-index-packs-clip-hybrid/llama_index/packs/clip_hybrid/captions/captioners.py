"""Captioners: what turns one image into searchable text.

- :class:`LLMCaptioner` asks a vision LLM: GPT-4o through LlamaIndex's ``OpenAI`` LLM,
  Qwen-VL-Max through DashScope's OpenAI-compatible endpoint (``OpenAILike``; the
  ``DashScopeMultiModal`` integration is broken on core 0.14, see the README), or any
  LlamaIndex LLM that accepts image blocks.
- :class:`OCRCaptioner` reads the text in the image offline with ``rapidocr-onnxruntime``
  (PP-OCRv4 Chinese+English models inside its wheel), for users without an API key.

A captioner makes one attempt per call and classifies its failure
(:class:`CaptionError`: retryable or not, Retry-After); retries, concurrency, the cache
and the usage summary belong to :class:`~llama_index.packs.clip_hybrid.VLMCaptionTransform`.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import io
import json
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from ..images.decode import DEFAULT_MAX_PIXELS

#: The default instruction: a faithful description, then the visible text verbatim.
DEFAULT_CAPTION_PROMPT = (
    "Describe this image for a search index. First write one or two factual sentences "
    "on what it shows: the kind of image (photo, diagram, chart, screenshot, document), "
    "its subject and its main parts. Then write 'Text:' followed by a verbatim transcript "
    "of every piece of text visible in the image (titles, labels, axis ticks, UI strings, "
    "signs), in the language and script it is written in, or 'Text: none' when there is "
    "none. Do not guess at text you cannot read and do not add commentary."
)

#: Appended to the prompt when a caption language is chosen.
LANGUAGE_INSTRUCTION = (
    "Write the description in {language}; keep the transcribed text in its original language."
)

LANGUAGE_NAMES = {
    "zh": "Simplified Chinese (简体中文)",
    "zh-cn": "Simplified Chinese (简体中文)",
    "zh-tw": "Traditional Chinese (繁體中文)",
    "en": "English",
    "ja": "Japanese",
    "ko": "Korean",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
}

OPENAI_DEFAULT_MODEL = "gpt-4o"
DASHSCOPE_DEFAULT_MODEL = "qwen-vl-max"
DASHSCOPE_COMPATIBLE_BASE_URL = "https://dashscope.aliyuncs.com/compatible-mode/v1"

Detail = Literal["low", "high", "auto"]

_KEY_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-*]{4,}|Bearer\s+\S+|api[_-]?key=\S+)", re.I)


def redact(text: str) -> str:
    """``text`` with anything that looks like an API key replaced by ``***``."""
    return _KEY_PATTERN.sub("***", text)


def build_prompt(prompt: str = DEFAULT_CAPTION_PROMPT, language: str | None = None) -> str:
    """The prompt, with the language instruction when a caption language is chosen."""
    if not language:
        return prompt
    name = LANGUAGE_NAMES.get(language.lower(), language)
    return f"{prompt}\n{LANGUAGE_INSTRUCTION.format(language=name)}"


@dataclass(frozen=True)
class CaptionImage:
    """One image to caption: who it belongs to, its bytes and their sha256."""

    key: str
    data: bytes
    sha256: str
    path: str = ""

    @classmethod
    def from_bytes(cls, key: str, data: bytes, path: str = "") -> CaptionImage:
        return cls(key=key, data=data, sha256=hashlib.sha256(data).hexdigest(), path=path)


@dataclass(frozen=True)
class Caption:
    """A captioner's answer, with the token counts when the service reports them."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class CaptionError(Exception):
    """One failed caption attempt.

    Attributes:
        reason: A short, key-free explanation for the report.
        retryable: Worth another try (429, 5xx, timeouts, broken responses).
        fatal: No other image can succeed either (bad key, unknown model): stop the run.
        retry_after: Seconds the service asked to wait (Retry-After), if it said.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool = False,
        fatal: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.fatal = fatal
        self.retry_after = retry_after


class Captioner(ABC):
    """Turns one image into text. Subclasses set ``name`` and implement :meth:`acaption`."""

    #: Provider and model, e.g. ``openai:gpt-4o``; part of the cache key.
    name: str = "captioner"
    #: An empty answer is a failure for a VLM (it always has something to say) but a
    #: normal result for OCR (no text in the image).
    empty_is_failure: bool = True
    #: Where the caption comes from, stored with each caption node.
    source: str = "vlm"

    @property
    def settings(self) -> dict[str, Any]:
        """Everything that changes the caption; hashed into :attr:`cache_key`."""
        return {"name": self.name}

    @property
    def cache_key(self) -> str:
        """Cache namespace: a changed model, prompt or language means new captions."""
        raw = json.dumps(self.settings, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:24]

    @abstractmethod
    async def acaption(self, image: CaptionImage, *, timeout: float) -> Caption:
        """Caption one image in one attempt; raise :class:`CaptionError` on failure."""

    def __repr__(self) -> str:
        # Stable and key-free: IngestionPipeline hashes it into its own cache key.
        return f"{type(self).__name__}({self.name!r}, cache_key={self.cache_key!r})"


# -- vision LLMs --------------------------------------------------------------------------


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
    """Import the openai client's API resources now (~1.7 s on 2 cores) rather than
    inside the first request, where they would stall every request of the first wave."""
    import openai.resources.chat  # noqa: F401


def forget_client_of_closed_loop(llm: Any) -> None:
    """Workaround: make LlamaIndex's OpenAI LLMs open a new async client per event loop.

    ``llama-index-llms-openai`` (0.8.x, also ``OpenAILike``) keeps one ``AsyncOpenAI``
    client for the life of the LLM (``reuse_client=True``); its httpx connections belong
    to the event loop of the first call. Each sync ``VLMCaptionTransform(...)`` call runs
    its own loop (``asyncio_run``), so the second call fails with "Event loop is closed"
    (run-llama/llama_index#20433, closed without a fix; tests/test_captions.py shows it).
    Dropping the cached client when the loop changed makes the LLM build a new one.
    Delete this the day upstream binds the client to the loop.
    """
    if not hasattr(llm, "_aclient"):
        return
    loop = asyncio.get_running_loop()
    if getattr(llm, "_clip_hybrid_loop", None) is not loop:
        llm._aclient = None
        object.__setattr__(llm, "_clip_hybrid_loop", loop)


def classify_error(exc: BaseException, timeout: float) -> CaptionError:
    """Turn an LLM client's exception into a :class:`CaptionError` (key-free reason)."""
    if isinstance(exc, CaptionError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return CaptionError(f"timed out after {timeout:g} s", retryable=True)
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    if isinstance(status, int):
        detail = redact(_error_message(exc))[:200]
        reason = f"HTTP {status} from the API: {detail}" if detail else f"HTTP {status}"
        code = _error_code(exc)
        if code in _FATAL_CODES:  # a 429 that no wait will cure
            return CaptionError(f"{reason} (check the account's quota and billing)", fatal=True)
        if status == 429 or status >= 500 or status in (408, 409):
            return CaptionError(reason, retryable=True, retry_after=_retry_after(response))
        if status in (401, 403):
            return CaptionError(f"{reason} (check the API key)", fatal=True)
        if status == 404:
            return CaptionError(f"{reason} (check the model name and base URL)", fatal=True)
        return CaptionError(reason)
    if "Timeout" in name:
        return CaptionError(f"timed out after {timeout:g} s ({name})", retryable=True)
    # Connection errors, malformed JSON, unexpected shapes: transient until proven otherwise.
    return CaptionError(f"{name}: {redact(str(exc))[:200]}", retryable=True)


#: Error codes that come with a retryable-looking status but cannot succeed by waiting:
#: OpenAI's exhausted quota (HTTP 429) and DashScope's overdue account.
_FATAL_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "Arrearage"})


def _error_code(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("code") or inner.get("type") or "")
        return str(body.get("code") or "")
    return str(getattr(exc, "code", "") or "")


def _error_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return str(getattr(exc, "message", "") or "")


def _retry_after(response: Any) -> float | None:
    """Seconds from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``."""
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


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
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > limit_pixels:
                raise CaptionError(f"image too large ({width}x{height})")
            fmt = (img.format or "").upper()
            scale = _scale(width, height, detail, max_pixels)
            if scale >= 1.0 and fmt in ("PNG", "JPEG", "WEBP", "GIF"):
                return data, Image.MIME[fmt]
            img.load()
            out: Image.Image = img
            if scale < 1.0:
                # floor (plus float slack): the area must stay within the budget
                size = (max(1, int(width * scale + 1e-6)), max(1, int(height * scale + 1e-6)))
                out = img.resize(size, Image.Resampling.LANCZOS)
            return _encode(out, fmt)
    except CaptionError:
        raise
    except Exception as exc:
        raise CaptionError(f"not a readable image ({type(exc).__name__}: {exc})") from exc


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


# -- offline OCR --------------------------------------------------------------------------


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
            with Image.open(io.BytesIO(data)) as img:
                if img.size[0] * img.size[1] > DEFAULT_MAX_PIXELS:
                    raise CaptionError(f"image too large ({img.size[0]}x{img.size[1]})")
                array = np.asarray(img.convert("RGB"))[:, :, ::-1]  # RapidOCR wants BGR
        except CaptionError:
            raise
        except Exception as exc:
            raise CaptionError(f"not a readable image ({type(exc).__name__}: {exc})") from exc
        with self._lock:
            engine = self._load()
            result, _ = engine(np.ascontiguousarray(array), return_word_box=True)
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
