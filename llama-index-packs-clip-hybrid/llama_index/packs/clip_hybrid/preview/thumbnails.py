"""Thumbnails for the page: made once per image version, small, cached, decoded within limits.

A thumbnail is a ~256 px JPEG made on the first request for an image (JPEGs decoded at a
reduced scale, everything under the ingestion's pixel limit) and kept in memory by the
image's id and content hash, so a changed file gets a new one. Concurrent requests for
one image wait for a single decode, and at most :data:`DECODES` decodes run at once:
four requests for a 10000x10000 PNG cost one decode, not four.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from ..images.decode import DEFAULT_MAX_PIXELS, thumbnail

THUMB_SIDE = 256
#: Thumbnails kept (~10 KB each: ~20 MB at most).
CACHE_SIZE = 2000
#: Full-size decodes running at once.
DECODES = 2


class ThumbnailCache:
    """JPEG thumbnails by (image id, sha256), least recently used dropped first."""

    def __init__(
        self,
        *,
        side: int = THUMB_SIDE,
        size: int = CACHE_SIZE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.side = side
        self.size = size
        self.max_pixels = max_pixels
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[tuple[str, str], threading.Lock] = {}
        self._decodes = threading.BoundedSemaphore(DECODES)
        self.made = 0

    def get(self, image_id: str, sha256: str, path: str) -> bytes:
        """The thumbnail of the image at ``path`` (raises ImageLoadError when unreadable)."""
        key = (image_id, sha256)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
            making = self._making.setdefault(key, threading.Lock())
        try:
            with making:  # one decode per image, however many ask at once
                with self._lock:
                    found = self._cache.get(key)
                if found is None:
                    with self._decodes:
                        img = thumbnail(path, self.side, max_pixels=self.max_pixels)
                    buf = io.BytesIO()
                    img.save(buf, format="JPEG", quality=85)
                    found = buf.getvalue()
                    with self._lock:
                        self._cache[key] = found
                        self.made += 1
                        while len(self._cache) > self.size:
                            self._cache.popitem(last=False)
        finally:  # also when the image cannot be read: no lock left behind per id
            with self._lock:
                self._making.pop(key, None)
        return found
