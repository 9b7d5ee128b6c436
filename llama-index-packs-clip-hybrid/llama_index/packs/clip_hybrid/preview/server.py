"""The preview server: one page and a small JSON API over a ClipHybridPack.

Safety: it binds to 127.0.0.1 by default; images are served only by their id in the
index (never by a client-supplied path); uploads are size- and pixel-limited and kept in
memory (never written to disk); errors are short JSON messages without secrets.

Routes:
    GET  /                        the page
    GET  /static/scatter.js       the page's WebGL map (shipped in the package; no CDN)
    GET  /api/status              counts, model, branches
    GET  /api/points              every image on the 2D map (PCA, or UMAP, of the image vectors)
    GET  /api/image/<id>          a thumbnail of an indexed image
    POST /api/search              {mode, query | image_id | image_b64, top_k, keep_self_hit}
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.schema import QueryBundle
from PIL import Image

from ..clip.embedding import ClipWeightsUnavailableError
from ..images.decode import ImageLoadError, open_image
from .projection import PROJECTIONS, Map2D, UmapProjection, fit_projection

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
MAX_QUERY_CHARS = 2_000
MAX_TOP_K = 50
THUMB_SIDE = 256
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    cache: str = "no-store"


def _json(payload: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"))


class PreviewApp:
    """The page's API over a pack; thread-safe (one search at a time, shared model)."""

    def __init__(self, pack: Any, projection: str = "pca") -> None:
        if projection not in PROJECTIONS:
            choices = ", ".join(PROJECTIONS)
            raise ValueError(f"projection must be one of {choices}, not {projection!r}")
        self.pack = pack
        self.projection = projection
        # Searches run one at a time (one shared model; the pack keeps per-search state such
        # as last_branches); the map has its own lock; status and thumbnails take neither,
        # so they never queue behind a CLIP forward pass (benchmarks/bench_load.py).
        self._search_lock = threading.Lock()
        self._map_lock = threading.RLock()
        self._projection: Map2D | None = None
        self._points: list[dict[str, Any]] = []
        self._by_id: dict[str, dict[str, Any]] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._projected_count = -1

    # -- dispatch -------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> Response:
        try:
            route = path.split("?", 1)[0]
            if method == "GET" and route in ("/", "/index.html"):
                return self._page()
            if method == "GET" and route in _STATIC:
                return self._static(route)
            if method == "GET" and route == "/api/status":
                return _json(self.status())
            if method == "GET" and route == "/api/points":
                return _json(self.points())
            if method == "GET" and route.startswith("/api/image/"):
                return self._thumbnail(route[len("/api/image/") :])
            if method == "POST" and route == "/api/search":
                return _json(self.search(_parse(body)))
            if route.startswith("/api/") or route.startswith("/static/"):
                raise ApiError(404 if method in ("GET", "POST") else 405, "no such route")
            raise ApiError(404, "not found")
        except ApiError as exc:
            return _json({"error": exc.message}, exc.status)
        except ClipWeightsUnavailableError as exc:
            return _json({"error": f"CLIP model not available: {exc}"}, 503)
        except Exception as exc:  # never a traceback (or a secret) on the page
            logger.exception("preview: %s %s failed", method, path.split("?", 1)[0])
            return _json({"error": f"internal error ({type(exc).__name__})"}, 500)

    # -- read-only views ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        pack = self.pack
        images = pack.store.count()
        captions = pack.caption_store.count() if pack.caption_store.exists() else 0
        model = pack.store.model
        return {
            "images": images,
            "captions": captions,
            "model": model,
            "clip": not pack.has_no_clip,
            "modes": (["hybrid"] if pack.has_no_clip else ["text", "image", "hybrid"]),
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
        count = self.pack.store.count()
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
            self._vectors = dict(zip(ids, vectors, strict=True))
        else:
            self._projection, self._vectors = None, {}
        self._points = points
        self._by_id = {p["id"]: p for p in points}
        self._projected_count = count

    def _thumbnail(self, image_id: str) -> Response:
        if not _ID.match(image_id):
            raise ApiError(400, "bad image id")
        row = self.pack.store.get([image_id], ["path"]).get(image_id)
        if row is None or not row.get("path"):
            raise ApiError(404, "no indexed image with this id")
        try:
            img = open_image(row["path"])
        except ImageLoadError as exc:
            raise ApiError(404, f"image unreadable: {exc.reason}") from exc
        img.thumbnail((THUMB_SIDE, THUMB_SIDE))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=85)
        return Response(200, buf.getvalue(), "image/jpeg", "private, max-age=300")

    # -- search ---------------------------------------------------------------------------

    def search(self, request: dict[str, Any]) -> dict[str, Any]:
        mode = request.get("mode", "text")
        if mode not in ("text", "image", "hybrid"):
            raise ApiError(400, "mode must be text, image or hybrid")
        top_k = request.get("top_k", 8)
        if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise ApiError(400, f"top_k must be an integer from 1 to {MAX_TOP_K}")
        keep = bool(request.get("keep_self_hit", False))
        query, label = self._query(request, mode)
        with self._search_lock:
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
            return self._run(mode, query, label, top_k, keep)

    def _query(self, request: dict[str, Any], mode: str) -> tuple[Any, str]:
        text = request.get("query")
        image_id = request.get("image_id")
        upload = request.get("image_b64")
        if sum(x is not None for x in (text, image_id, upload)) != 1:
            raise ApiError(400, "give exactly one of query, image_id, image_b64")
        if text is not None:
            if mode == "image":
                raise ApiError(400, "image mode needs image_id or image_b64")
            if not isinstance(text, str) or not text.strip():
                raise ApiError(400, "the query is empty")
            if len(text) > MAX_QUERY_CHARS:
                raise ApiError(400, f"the query is longer than {MAX_QUERY_CHARS} characters")
            return text, text
        if mode == "text":
            raise ApiError(400, "text mode needs a query")
        if image_id is not None:
            if not isinstance(image_id, str) or not _ID.match(image_id):
                raise ApiError(400, "bad image id")
            row = self.pack.store.get([image_id], ["path"]).get(image_id)
            if row is None or not row.get("path"):
                raise ApiError(404, "no indexed image with this id")
            return Path(row["path"]), Path(row["path"]).name
        return _decode_upload(upload), "uploaded image"

    def _run(self, mode: str, query: Any, label: str, top_k: int, keep: bool) -> dict[str, Any]:
        pack = self.pack
        out: dict[str, Any] = {"mode": mode, "query": label, "filtered": [], "branches": []}
        if mode == "hybrid":
            result = pack.search(query, mode="hybrid", similarity_top_k=top_k)
            hits = result.hits
            out["branches"] = result.branches
            out["failed_branches"] = result.failed_branches
            out["terms"] = _terms(query) if isinstance(query, str) else []
        else:
            if mode == "text":  # one CLIP forward for both the search and the map marker
                vector = pack.embed_model.get_query_embedding(query)
                out["query_point"] = self._project(vector)
                query = QueryBundle(query_str=query, embedding=vector)
            result = pack.search(query, mode=mode, similarity_top_k=top_k, keep_self_hit=keep)
            hits, report = result.hits, result.self_hits
            for dropped in report.dropped if report else []:
                out["filtered"].append(
                    {
                        "id": dropped.node_id,
                        "score": dropped.score,
                        "reason": dropped.reason,
                        **self._point(dropped.node_id),
                    }
                )
        captions = self._captions([h.node.node_id for h in hits])
        results = []
        for rank, hit in enumerate(hits, 1):
            meta = hit.node.metadata
            item = {
                "rank": rank,
                "id": hit.node.node_id,
                "score": hit.score,
                "category": meta.get("category", ""),
                **self._point(hit.node.node_id),
            }
            hybrid = meta.get("hybrid")
            if hybrid:
                item["rrf"] = hybrid["rrf"]
                item["branches"] = hybrid["branches"]
            if hit.node.node_id in captions:
                item["caption"] = captions[hit.node.node_id]
            results.append(item)
        out["results"] = results
        if "query_point" not in out:
            out["query_point"] = self._query_point(mode, query)
        return out

    def _point(self, image_id: str) -> dict[str, Any]:
        point = self._by_id.get(image_id)
        if point is None:
            return {"name": image_id, "x": None, "y": None}
        return {"name": point["name"], "x": point.get("x"), "y": point.get("y")}

    def _captions(self, ids: list[str]) -> dict[str, str]:
        store = self.pack.caption_store
        if not ids or not store.exists():
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
            vector = model.get_image_embedding(io.BytesIO(query))
        return self._project(vector)

    def _project(self, vector: Any) -> dict[str, float] | None:
        if self._projection is None:
            return None
        x, y = self._projection.transform(np.asarray(vector))[0]
        return {"x": round(float(x), 5), "y": round(float(y), 5)}

    # -- static ---------------------------------------------------------------------------

    def _page(self) -> Response:
        html = resources.files(__package__).joinpath("static/index.html").read_bytes()
        return Response(200, html, "text/html; charset=utf-8")

    def _static(self, route: str) -> Response:
        name, content_type = _STATIC[route]  # a fixed table: no client path reaches the disk
        data = resources.files(__package__).joinpath(f"static/{name}").read_bytes()
        return Response(200, data, content_type, "no-cache")


_STATIC = {"/static/scatter.js": ("scatter.js", "text/javascript; charset=utf-8")}


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "the request body is not JSON") from exc
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return payload


def _decode_upload(upload: Any) -> bytes:
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
        with Image.open(io.BytesIO(data)) as img:
            if img.size[0] * img.size[1] > MAX_UPLOAD_PIXELS:
                raise ApiError(413, f"the upload has more than {MAX_UPLOAD_PIXELS:,} pixels")
            img.verify()
    except ApiError:
        raise
    except Exception as exc:
        raise ApiError(400, "the upload is not an image") from exc
    return data


def _terms(query: str) -> list[str]:
    """The query's words as typed (CJK runs segmented), for marking them in captions."""
    from ..hybrid.tokens import _CJK_RUN, _jieba

    words: list[str] = []
    for part in re.split(r"\s+", query.strip()):
        if _CJK_RUN.search(part):
            words += [w for w in _jieba().lcut_for_search(part) if w.strip()]
        elif len(part) > 1:
            words.append(part)
    return sorted(set(words), key=len, reverse=True)


class _Handler(BaseHTTPRequestHandler):
    app: PreviewApp
    protocol_version = "HTTP/1.1"
    server_version = "clip-hybrid-preview"

    def log_message(self, format: str, *args: Any) -> None:  # method, path, status only
        logger.info("%s %s", self.command, self.path.split("?", 1)[0])

    def do_GET(self) -> None:
        self._respond(self.app.handle("GET", self.path, b""))

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:  # rfile.read(-1) would read until the client hangs up
            self._respond(_json({"error": "a bad Content-Length"}, 400), close=True)
            return
        if length > MAX_UPLOAD_BYTES * 2:
            self.rfile.read(min(length, MAX_UPLOAD_BYTES * 2))
            self._respond(_json({"error": "the request is too large"}, 413), close=True)
            return
        body = self.rfile.read(length) if length else b""
        self._respond(self.app.handle("POST", self.path, body))

    def _respond(self, response: Response, *, close: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", response.cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(response.body)


def make_server(
    pack: Any, host: str = "127.0.0.1", port: int = 8000, projection: str = "pca"
) -> ThreadingHTTPServer:
    """A threaded HTTP server for the page (not started); ``port=0`` picks a free one."""
    app = PreviewApp(pack, projection=projection)
    handler = type("PreviewHandler", (_Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(
    pack: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    ready: Callable[[str], None] | None = None,
    projection: str = "pca",
) -> None:
    """Serve until interrupted; ``ready`` gets the URL once listening."""
    server = make_server(pack, host, port, projection=projection)
    server.RequestHandlerClass.app.points()  # type: ignore[attr-defined]  # map ready first
    url = f"http://{host}:{server.server_address[1]}/"
    if ready is not None:
        ready(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
