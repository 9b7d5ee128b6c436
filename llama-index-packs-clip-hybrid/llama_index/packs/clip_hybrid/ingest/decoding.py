"""Decoding the images of a chunk for the forward pass, on as many threads as the process
has cores: Pillow decodes and resizes without holding the GIL, so threads run in parallel."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from PIL import Image

from ..images.decode import ImageLoadError
from .report import IngestFailure, IngestReport


class PixelBudget:
    """At most ``capacity`` pixels decoding at once (one image bigger than that alone):
    N threads decoding N large PNG scans would each hold a full-size image."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._changed = threading.Condition()

    @contextmanager
    def take(self, pixels: int) -> Iterator[None]:
        pixels = max(0, min(pixels, self.capacity))
        with self._changed:
            self._changed.wait_for(lambda: self.used + pixels <= self.capacity)
            self.used += pixels
        try:
            yield
        finally:
            with self._changed:
                self.used -= pixels
                self._changed.notify_all()


class ChunkDecoder:
    """Opens a chunk's images with ``open_one`` on ``workers`` threads (one: inline).

    Images with the same bytes are decoded once: the first copy, or the next one when that
    fails. Failures go to the report, named by path (or id); the others are returned, as
    (item, image) pairs. With a ``budget``, at most that many pixels (each image's count
    from ``pixels``: by default its header) are being decoded at a time. Use it as a
    context manager: the threads end with it.
    """

    def __init__(
        self,
        open_one: Callable[[Any], Image.Image],
        *,
        workers: int = 1,
        budget: int = 0,
        pixels: Callable[[Any], int] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers} must be >= 1.")
        self.open_one = open_one
        self.workers = workers
        self.pixels = pixels or header_pixels
        self.budget = PixelBudget(budget) if budget and workers > 1 else None
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> ChunkDecoder:
        if self.workers > 1:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clip-decoder")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def decode(self, todo: Sequence[Any], report: IngestReport) -> list[tuple[Any, Image.Image]]:
        """The decoded images of the items without a vector (a copy tried after a failed
        first copy comes after the others)."""
        copies: dict[str, list[Any]] = {}
        for item in todo:
            if item.vector is None:  # else copied from identical bytes: nothing to decode
                copies.setdefault(item.sha256, []).append(item)
        out: list[tuple[Any, Image.Image]] = []
        pending = list(copies.values())
        while pending:
            heads = [group.pop(0) for group in pending]
            retry = []
            for group, item, result in zip(pending, heads, self._map(heads), strict=True):
                if isinstance(result, ImageLoadError):
                    report.failed.append(IngestFailure(item.path or item.id, result.reason))
                    if group:
                        retry.append(group)  # the next copy of these bytes, if readable
                else:
                    out.append((item, result))
            pending = retry
        return out

    def _map(self, items: list[Any]) -> list[Image.Image | ImageLoadError]:
        if self._pool is None or len(items) < 2:
            return [self._open(item) for item in items]
        return list(self._pool.map(self._open, items))

    def _open(self, item: Any) -> Image.Image | ImageLoadError:
        try:
            if self.budget is None:
                return self.open_one(item)
            with self.budget.take(self.pixels(item)):
                return self.open_one(item)
        except ImageLoadError as exc:
            return exc


def header_pixels(item: Any) -> int:
    """The pixels an item's image decodes to, from its header (its ``path``, or its
    ``data`` bytes); 0 when the header cannot be read (the decoder then says why)."""
    try:
        with Image.open(item.path if item.data is None else io.BytesIO(item.data)) as img:
            return int(img.width * img.height)
    except Exception:
        return 0
