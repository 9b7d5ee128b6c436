"""A captioning service's failure, classified: retry it, give up on the image, or stop the run."""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

from ..redaction import redact
from .base import CaptionError


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
