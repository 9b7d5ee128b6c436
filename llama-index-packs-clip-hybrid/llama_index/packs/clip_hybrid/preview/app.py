"""PreviewApp: the page's routes over a ClipHybridPack, as plain requests in and responses out.

No HTTP here (``http.py`` serves this): ``handle(method, path, body)`` returns a
:class:`Response`. Images are served only by their id in the index (never by a path a
client sends); uploads are size- and pixel-limited and stay in memory; errors are short
JSON messages without secrets or tracebacks.

Routes:
    GET  /                        the page
    GET  /static/scatter.js       the page's WebGL map (shipped in the package; no CDN)
    GET  /api/status              counts, model, modes
    GET  /api/points              every image on the 2D map (PCA, or UMAP, of the image vectors)
    GET  /api/image/<id>          a thumbnail of an indexed image
    POST /api/search              {mode, query | image_id | image_b64, top_k, keep_self_hit}
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.schema import QueryBundle

from ..clip.embedding import ClipWeightsUnavailableError
from ..hybrid.tokens import query_terms
from ..images.decode import ImageLoadError
from ..redaction import package_logger, redact
from .projection import PROJECTIONS, Map2D, UmapProjection, fit_projection
from .requests import ApiError, decode_upload, image_id, parse_body, search_request, text_query
from .thumbnails import ThumbnailCache

logger = package_logger(__name__)

_STATIC = {"/static/scatter.js": ("scatter.js", "text/javascript; charset=utf-8")}


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    cache: str = "no-store"


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def model_label(model: str | None) -> str | None:
    """A model's name for people: a local checkpoint path shows as its file name."""
    if not model:
        return model
    return os.path.basename(model) if os.sep in model or model.endswith(".pt") else model


#: Searches run at once; more wait for a slot, on their own worker thread. Each search
#: keeps the cores busy (a CLIP forward, vector searches), so more at once only slows
#: every one of them down.
SEARCHES = 4
#: Seconds a search waits for a slot before it is answered 503 (busy): a hung model or
#: API cannot make the waiting searches hold every worker thread for ever.
SEARCH_WAIT = 60.0


class PreviewApp:
    """The page's API over a pack. Up to :data:`SEARCHES` searches run at once (the pack
    keeps no per-call state); the map has its own lock; status, the map and thumbnails
    never wait for a search (the transport has more worker threads than search slots)."""

    def __init__(self, pack: Any, projection: str = "pca") -> None:
        if projection not in PROJECTIONS:
            choices = ", ".join(PROJECTIONS)
            raise ValueError(f"projection must be one of {choices}, not {projection!r}")
        self.pack = pack
        self.projection = projection
        self.thumbnails = ThumbnailCache()
        self._map_lock = threading.RLock()
        self._projection: Map2D | None = None
        self._points: list[dict[str, Any]] = []
        self._by_id: dict[str, dict[str, Any]] = {}
        self._projected_count: tuple[int, int] = (-1, -1)
        self._search_slots = threading.BoundedSemaphore(SEARCHES)

    def warm(self) -> None:
        """Open the collections and draw the map before the first request, so that the
        first search is not the one that pays for them."""
        self.pack.store.open_existing()
        self.pack.caption_store.open_existing()
        self.points()

    # -- dispatch -------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> Response:
        try:
            route = path.split("?", 1)[0]
            if method == "GET" and route in ("/", "/index.html"):
                return self._file("static/index.html", "text/html; charset=utf-8", "no-store")
            if method == "GET" and route in _STATIC:
                name, kind = _STATIC[route]  # a fixed table: no client path reaches the disk
                return self._file(f"static/{name}", kind, "no-cache")
            if method == "GET" and route == "/api/status":
                return json_response(self.status())
            if method == "GET" and route == "/api/points":
                return json_response(self.points())
            if method == "GET" and route.startswith("/api/image/"):
                return self._thumbnail(route[len("/api/image/") :])
            if method == "POST" and route == "/api/search":
                return json_response(self.search(parse_body(body)))
            if route.startswith(("/api/", "/static/")):
                raise ApiError(404 if method in ("GET", "POST") else 405, "no such route")
            raise ApiError(404, "not found")
        except ApiError as exc:
            return json_response({"error": exc.message}, exc.status)
        except ClipWeightsUnavailableError as exc:
            return json_response({"error": redact(f"CLIP model not available: {exc}")}, 503)
        except Exception as exc:  # never a traceback (or a secret) on the page
            logger.error(
                "preview: %s %s failed: %s",
                method,
                path.split("?", 1)[0][:200],
                redact(f"{type(exc).__name__}: {exc}"),
            )
            return json_response({"error": f"internal error ({type(exc).__name__})"}, 500)

    def _file(self, name: str, kind: str, cache: str) -> Response:
        return Response(200, resources.files(__package__).joinpath(name).read_bytes(), kind, cache)

    # -- read-only views ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        pack = self.pack
        clip = not pack.has_no_clip
        return {
            "images": pack.store.count(),
            "captions": pack.caption_store.count() if pack.caption_store.open_existing() else 0,
            "model": model_label(pack.store.model),
            "clip": clip,
            "modes": ["text", "image", "hybrid"] if clip else ["hybrid"],
        }

    def points(self) -> dict[str, Any]:
        with self._map_lock:
            self._refresh_projection()
            projection = self._projection
        explained = projection.explained if projection else (0.0, 0.0)
        return {
            "points": self._points,
            "projection": projection.method if projection else self.projection,
            "explained": list(explained) if explained is not None else None,
        }

    def _refresh_projection(self) -> None:
        # The count alone missed a delete and an ingest of as many images (a stale map);
        # this process's writes say so, another process's change its count.
        count = (self.pack.store.count(), self.pack.store.writes)
        if count == self._projected_count:
            return
        ids, vectors, points = [], [], []
        for row in self.pack.store.iter_rows(["vector", "path", "category"]):
            ids.append(row["id"])
            vectors.append(np.asarray(row["vector"], dtype=np.float32))
            points.append(
                {
                    "id": row["id"],
                    "name": Path(row["path"]).name if row["path"] else row["id"],
                    "category": row.get("category") or "",
                }
            )
        self._projection = None
        if vectors:
            matrix = np.stack(vectors)
            self._projection = fit_projection(matrix, self.projection)
            xy = (
                self._projection.embedding
                if isinstance(self._projection, UmapProjection)
                else self._projection.transform(matrix)
            )
            for point, (x, y) in zip(points, xy, strict=True):
                point["x"], point["y"] = round(float(x), 5), round(float(y), 5)
        self._points = points
        self._by_id = {p["id"]: p for p in points}
        self._projected_count = count

    def _thumbnail(self, raw_id: str) -> Response:
        key = image_id(raw_id)
        row = self.pack.store.get([key], ["path", "sha256"]).get(key)
        if row is None or not row.get("path"):
            raise ApiError(404, "no indexed image with this id")
        try:
            data = self.thumbnails.get(key, row.get("sha256", ""), row["path"])
        except ImageLoadError as exc:
            status = 413 if exc.problem == "too_large" else 404
            raise ApiError(status, f"image unreadable: {exc.reason}") from exc
        return Response(200, data, "image/jpeg", "private, max-age=300")

    # -- search ---------------------------------------------------------------------------

    def search(self, request: dict[str, Any]) -> dict[str, Any]:
        mode, top_k, keep = search_request(request)
        query, label = self._query(request, mode)
        if not self.pack.store.open_existing() or self.pack.store.count() == 0:
            return {
                "mode": mode,
                "results": [],
                "filtered": [],
                "query_point": None,
                "message": "The index is empty: run clip-hybrid index PATH first.",
            }
        if self.pack.has_no_clip and mode != "hybrid":
            raise ApiError(400, "this index has no CLIP vectors; use hybrid")
        with self._map_lock:
            self._refresh_projection()
        try:
            if not self._search_slots.acquire(timeout=SEARCH_WAIT):
                raise ApiError(503, "the server is busy with other searches; try again")
            try:
                return self._run(mode, query, label, top_k, keep)
            finally:
                self._search_slots.release()
        except ImageLoadError as exc:
            status = 413 if exc.problem == "too_large" else 400
            raise ApiError(status, f"the image cannot be read ({exc.reason})") from exc

    def _query(self, request: dict[str, Any], mode: str) -> tuple[Any, str]:
        text = request.get("query")
        raw_id = request.get("image_id")
        upload = request.get("image_b64")
        if sum(x is not None for x in (text, raw_id, upload)) != 1:
            raise ApiError(400, "give exactly one of query, image_id, image_b64")
        if text is not None:
            if mode == "image":
                raise ApiError(400, "image mode needs image_id or image_b64")
            text = text_query(text)
            return text, text
        if mode == "text":
            raise ApiError(400, "text mode needs a query")
        if raw_id is not None:
            key = image_id(raw_id)
            row = self.pack.store.get([key], ["path"]).get(key)
            if row is None or not row.get("path"):
                raise ApiError(404, "no indexed image with this id")
            return Path(row["path"]), Path(row["path"]).name
        return decode_upload(upload), "uploaded image"

    def _run(self, mode: str, query: Any, label: str, top_k: int, keep: bool) -> dict[str, Any]:
        pack = self.pack
        out: dict[str, Any] = {"mode": mode, "query": label, "filtered": [], "branches": []}
        if mode == "text":  # one CLIP forward for both the search and the map marker
            vector = pack.embed_model.get_query_embedding(query)
            out["query_point"] = self._project(vector)
            query = QueryBundle(query_str=query, embedding=vector)
        result = pack.search(query, mode=mode, similarity_top_k=top_k, keep_self_hit=keep)
        if mode == "hybrid":
            out["branches"] = result.branches
            out["failed_branches"] = result.failed_branches
            out["terms"] = query_terms(query) if isinstance(query, str) else []
        if result.note:  # "no caption matched": said, not an empty list
            out["note"] = result.note
        for dropped in result.self_hits.dropped if result.self_hits else []:
            out["filtered"].append(
                {
                    "id": dropped.node_id,
                    "score": dropped.score,
                    "reason": dropped.reason,
                    **self._point(dropped.node_id),
                }
            )
        captions = self._captions([h.node.node_id for h in result.hits])
        results = []
        for rank, hit in enumerate(result.hits, 1):
            meta = hit.node.metadata
            item = {
                "rank": rank,
                "id": hit.node.node_id,
                "score": hit.score,
                "category": meta.get("category", ""),
                **self._point(hit.node.node_id),
            }
            fused = meta.get("hybrid")
            if fused:
                item["rrf"] = fused["rrf"]
                item["branches"] = fused["branches"]
            if hit.node.node_id in captions:
                item["caption"] = captions[hit.node.node_id]
            results.append(item)
        out["results"] = results
        if "query_point" not in out:
            out["query_point"] = self._query_point(mode, query)
        return out

    def _point(self, key: str) -> dict[str, Any]:
        point = self._by_id.get(key)
        if point is None:
            return {"name": key, "x": None, "y": None}
        return {"name": point["name"], "x": point.get("x"), "y": point.get("y")}

    def _captions(self, ids: list[str]) -> dict[str, str]:
        store = self.pack.caption_store
        if not ids or not store.open_existing():
            return {}
        return {k: v["text"] for k, v in store.get(ids, ["text"]).items()}

    def _query_point(self, mode: str, query: Any) -> dict[str, float] | None:
        if self._projection is None or self.pack.has_no_clip:
            return None
        model = self.pack.embed_model
        if isinstance(query, str):
            if mode == "hybrid" and not query.strip():
                return None
            vector = model.get_query_embedding(query)
        elif isinstance(query, Path):
            vector = model.get_image_embedding(str(query))
        else:
            vector = model.get_image_embedding(query)
        return self._project(vector)

    def _project(self, vector: Any) -> dict[str, float] | None:
        if self._projection is None:
            return None
        x, y = self._projection.transform(np.asarray(vector))[0]
        return {"x": round(float(x), 5), "y": round(float(y), 5)}
