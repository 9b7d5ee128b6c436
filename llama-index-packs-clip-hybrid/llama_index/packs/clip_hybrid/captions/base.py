"""What every captioner shares: the prompt, one image to caption, a caption, a failed attempt."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

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
