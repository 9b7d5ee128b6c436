"""What the page may send: JSON, an image id, an upload; anything else is a 4xx, never a 500."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from ..images.decode import ImageLoadError, probe_image
from ..options import OptionError, check_mode, check_top_k

MAX_BODY_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
MAX_QUERY_CHARS = 2_000
MAX_TOP_K = 50
#: A JSON body nested deeper than this is refused before it is parsed.
MAX_JSON_DEPTH = 32
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a short message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object (400 for anything that is not one)."""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "the request is too large")
    if _depth(body) > MAX_JSON_DEPTH:
        raise ApiError(400, "the request body is nested too deeply")
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # not JSON, not UTF-8, a 5000-digit number
        raise ApiError(400, "the request body is not JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return payload


def _depth(body: bytes) -> int:
    """How deep brackets nest (strings skipped), without parsing: a 100k-deep array would
    exhaust the parser's recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return deepest
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def image_id(value: Any) -> str:
    """An image id as the index makes them (the whole string: a trailing newline is not)."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ApiError(400, "bad image id")
    return value


def search_request(payload: dict[str, Any]) -> tuple[str, int, bool]:
    """(mode, top_k, keep_self_hit) of a search request."""
    try:
        mode = check_mode(payload.get("mode", "text"), allowed=("text", "image", "hybrid"))
        top_k = check_top_k(payload.get("top_k", 8), option="top_k", at_most=MAX_TOP_K)
    except OptionError as exc:
        raise ApiError(400, str(exc)) from None
    keep = payload.get("keep_self_hit", False)
    if not isinstance(keep, bool):
        raise ApiError(400, "keep_self_hit must be true or false")
    return mode, top_k, keep


def text_query(value: Any) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"the query must be text (a JSON string), not {type(value).__name__}")
    if not value.strip():
        raise ApiError(400, "the query is empty")
    if len(value) > MAX_QUERY_CHARS:
        raise ApiError(400, f"the query is longer than {MAX_QUERY_CHARS} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in the JSON)
        raise ApiError(400, "the query is not valid Unicode text") from None
    return value


def decode_upload(upload: Any) -> bytes:
    """The bytes of an uploaded image (base64, optionally a data: URL), checked from its
    header: 413 over the size or pixel limit, 400 when it is not an image."""
    if not isinstance(upload, str):
        raise ApiError(400, "image_b64 must be a base64 string")
    if upload.startswith("data:"):
        upload = upload.split(",", 1)[-1]
    if len(upload) > MAX_UPLOAD_BYTES * 4 // 3 + 8:
        raise ApiError(413, f"the upload is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        data = base64.b64decode(upload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "image_b64 is not valid base64") from exc
    try:
        probe_image(data, max_pixels=MAX_UPLOAD_PIXELS, name="the upload")
    except ImageLoadError as exc:
        if exc.problem == "too_large":
            raise ApiError(413, f"the upload has more than {MAX_UPLOAD_PIXELS:,} pixels") from exc
        raise ApiError(400, "the upload is not an image") from exc
    return data
