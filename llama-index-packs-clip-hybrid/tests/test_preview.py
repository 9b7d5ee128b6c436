"""The preview server's JSON API over real HTTP on 127.0.0.1 (a tiny-CLIP index)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from llama_index.core.embeddings import MockEmbedding
from llama_index.packs.clip_hybrid import ClipHybridPack, LLMCaptioner
from llama_index.packs.clip_hybrid.preview import make_server
from llama_index.packs.clip_hybrid.testing import ApiStub, caption_table, require
from PIL import Image

PLANTED = "sk-planted-secret-0123456789"


def _captioner(image_dir: Path):
    table = {
        hashlib.sha256(path.read_bytes()).hexdigest(): (
            "Text: 系统架构图 API Gateway"
            if path.parent.name == "architecture"
            else f"A {path.parent.name} image."
        )
        for path in image_dir.rglob("*.png")
    }
    return caption_table(table)


@pytest.fixture
def server(milvus_uri, fast_clip, image_dir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)  # must never reach a response
    with ApiStub(caption=_captioner(image_dir)) as stub:
        captioner = LLMCaptioner.openai(api_key=PLANTED, api_base=stub.openai_base_url)
        pack = ClipHybridPack(
            uri=milvus_uri,
            embed_model=fast_clip,
            captioner=captioner,
            caption_embed=MockEmbedding(embed_dim=16),
            show_progress=False,
        )
        pack.ingest(image_dir)
    httpd = make_server(pack, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", pack
    httpd.shutdown()
    httpd.server_close()
    pack.store.close()


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as res:
            return res.status, res.read(), res.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


def _post(url: str, payload) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_page_and_its_map_script_are_served_from_the_package(server) -> None:
    url, _ = server
    status, html, kind = _get(url + "/")
    assert status == 200 and kind.startswith("text/html")
    assert b'<script src="/static/scatter.js">' in html
    status, js, kind = _get(url + "/static/scatter.js")
    assert status == 200 and kind.startswith("text/javascript") and b"class ScatterMap" in js
    for page in (html, js):  # nothing fetched from the internet
        assert b"https://" not in page and b"http://" not in page
    assert _get(url + "/static/index.html")[0] == 404  # only the named files
    assert _get(url + "/static/../server.py")[0] == 404


def test_status_and_points(server, image_dir) -> None:
    url, _ = server
    n = len(list(image_dir.rglob("*.png")))
    status = json.loads(_get(url + "/api/status")[1])
    assert status["images"] == n and status["captions"] == n and status["clip"] is True
    points = json.loads(_get(url + "/api/points")[1])
    assert len(points["points"]) == n
    assert all(isinstance(p["x"], float) and isinstance(p["y"], float) for p in points["points"])
    assert {p["category"] for p in points["points"]} == {
        p.parent.name for p in image_dir.rglob("*.png")
    }
    assert 0 < sum(points["explained"]) <= 1.0


def test_text_search_matches_the_pack_and_places_the_query(server) -> None:
    url, pack = server
    status, out = _post(url + "/api/search", {"mode": "text", "query": "a bar chart", "top_k": 4})
    assert status == 200
    hits = pack.search("a bar chart", mode="text", similarity_top_k=4).hits
    assert [r["id"] for r in out["results"]] == [h.node.node_id for h in hits]
    assert [r["score"] for r in out["results"]] == pytest.approx([h.score for h in hits])
    assert out["query_point"] is not None and out["filtered"] == []


def test_image_search_shows_the_filtered_self_hit_and_keeps_it_on_request(server) -> None:
    url, _ = server
    points = json.loads(_get(url + "/api/points")[1])["points"]
    query = next(p for p in points if p["name"] == "flowchart_0.png")
    status, out = _post(url + "/api/search", {"mode": "image", "image_id": query["id"]})
    assert status == 200
    assert query["id"] not in [r["id"] for r in out["results"]]
    (dropped,) = out["filtered"]
    assert dropped["id"] == query["id"] and dropped["score"] == pytest.approx(1.0, abs=1e-4)
    _, kept = _post(
        url + "/api/search", {"mode": "image", "image_id": query["id"], "keep_self_hit": True}
    )
    assert kept["results"][0]["id"] == query["id"] and kept["filtered"] == []


def test_hybrid_search_has_branches_captions_and_terms(server) -> None:
    url, _ = server
    status, out = _post(url + "/api/search", {"mode": "hybrid", "query": "系统架构图"})
    assert status == 200 and out["branches"] == ["clip", "caption_vector", "bm25"]
    top = out["results"][0]
    assert top["category"] == "architecture" and "系统架构图" in top["caption"]
    assert {"clip", "bm25"} <= set(top["branches"]) and top["rrf"] > 0
    assert "系统" in out["terms"]


def test_upload_search_and_upload_limits(server, image_dir) -> None:
    url, _ = server
    data = next(image_dir.rglob("bar_chart_0.png")).read_bytes()
    status, out = _post(
        url + "/api/search",
        {"mode": "image", "image_b64": "data:image/png;base64," + base64.b64encode(data).decode()},
    )
    assert status == 200 and len(out["filtered"]) == 1  # the same bytes: the self-hit
    status, err = _post(
        url + "/api/search", {"mode": "image", "image_b64": base64.b64encode(b"<html>").decode()}
    )
    assert status == 400 and err["error"] == "the upload is not an image"
    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, "PNG")
    status, err = _post(
        url + "/api/search",
        {"mode": "image", "image_b64": base64.b64encode(buf.getvalue()).decode()},
    )
    assert status == 413 and "pixels" in err["error"]
    assert not list(image_dir.rglob("upload*"))  # nothing written into the indexed folders


@pytest.mark.parametrize(
    "path",
    [
        "/api/image/..%2F..%2Fetc%2Fpasswd",
        "/api/image/../../etc/passwd",
        "/api/image/%2Fetc%2Fpasswd",
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/scatter.js/../../server.py",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/points/..%2F..%2Fetc%2Fpasswd",
        "/api/status/../../etc/passwd",
        "/api/image/",
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/index.html/../../etc/passwd",
    ],
)
def test_path_traversal_is_refused(server, path) -> None:
    url, _ = server
    status, body, _ = _get(url + path)
    assert status in (400, 404) and b"root:" not in body


def test_bad_requests_get_clear_errors(server) -> None:
    url, _ = server
    cases = [
        (b"not json", 400, "not JSON"),
        ({"mode": "text"}, 400, "exactly one"),
        ({"mode": "text", "query": "   "}, 400, "empty"),
        ({"mode": "text", "query": 5}, 400, "must be text (a JSON string), not int"),
        ({"mode": "text", "query": "x" * 5000}, 400, "longer"),
        ({"mode": "image", "image_id": "../../etc/passwd"}, 400, "bad image id"),
        ({"mode": "image", "image_id": "0" * 36}, 404, "no indexed image"),
        ({"mode": "sideways", "query": "x"}, 400, "mode"),
        ({"mode": "text", "query": "x", "top_k": 0}, 400, "top_k"),
        ({"mode": "image", "query": "x"}, 400, "image mode"),
    ]
    for payload, code, message in cases:
        status, out = _post(url + "/api/search", payload)
        assert status == code and message in out["error"], (payload, out)
    status, out = _post(url + "/api/search", {"mode": "text", "query": "😀 مرحبا 系统"})
    assert status == 200 and out["results"]
    thumb_status, thumb, kind = _get(url + f"/api/image/{out['results'][0]['id']}")
    assert thumb_status == 200 and kind == "image/jpeg"
    with Image.open(io.BytesIO(thumb)) as img:
        assert max(img.size) <= 256


def test_no_secret_in_any_response(server) -> None:
    url, _ = server
    bodies = [_get(url + p)[1] for p in ("/", "/api/status", "/api/points")]
    bodies.append(
        json.dumps(_post(url + "/api/search", {"mode": "hybrid", "query": "chart"})[1]).encode()
    )
    bodies.append(json.dumps(_post(url + "/api/search", {"mode": "x"})[1]).encode())
    assert not any(PLANTED.encode() in body for body in bodies)


def test_empty_index(milvus_uri, fast_clip) -> None:
    pack = ClipHybridPack(uri=milvus_uri, embed_model=fast_clip, captioner="none")
    httpd = make_server(pack, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        assert json.loads(_get(url + "/api/status")[1])["images"] == 0
        assert json.loads(_get(url + "/api/points")[1])["points"] == []
        status, out = _post(url + "/api/search", {"mode": "text", "query": "anything"})
        assert status == 200 and out["results"] == [] and "empty" in out["message"]
    finally:
        httpd.shutdown()
        httpd.server_close()
        pack.store.close()


# -- the page in a real browser -------------------------------------------------------


def _chromium() -> str:
    """The system Chromium for Playwright (.ci/run installs it; required on CI)."""
    import importlib.util
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    found = os.environ.get("CLIP_HYBRID_CHROMIUM", found)
    require(bool(found), "chromium (apt-get install chromium)")
    require(importlib.util.find_spec("playwright") is not None, "playwright")
    return found


def test_page_in_a_real_browser(server, image_dir, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    url, _ = server
    n = len(list(image_dir.rglob("*.png")))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            stats = page.evaluate("window.previewMap.stats()")
            assert stats["points"] == n  # every image on the map
            assert stats["renderer"] == "webgl" and stats["query"] is False
            categories = {p.parent.name for p in image_dir.rglob("*.png")}
            assert stats["categories"] == len(categories)
            painted = page.evaluate(_PAINTED_PIXELS)
            assert painted > n * 4  # the points are really on the canvas, not just counted
            # term marks are placed on the text, then escaped once: the caption reads as
            # it was, whatever it holds (no "<mark>diagrammark>", no "&amp;amp;")
            marked = page.evaluate(_MARKED, ["A diagram & <b>mark</b>", ["diagram", "mark", "b"]])
            assert marked == ["A diagram & <b>mark</b>", ["diagram", "b", "mark", "b"]]

            # text -> image: the list equals the API's, and a query marker is drawn
            page.fill("#query", "a bar chart")
            page.click("#go")
            page.wait_for_selector("#results .result")
            _, api = _post(
                url + "/api/search", {"mode": "text", "query": "a bar chart", "top_k": 8}
            )
            shown = page.eval_on_selector_all(
                "#results .result .score", "els => els.map(e => e.textContent)"
            )
            assert shown == [f"cosine {r['score']:.4f}" for r in api["results"]]
            stats = page.evaluate("window.previewMap.stats()")
            assert stats["query"] is True and stats["results"] == len(api["results"])

            # hovering a point shows its thumbnail; clicking it runs image -> image with it
            x, y, near = page.evaluate(_FIRST_POINT)
            page.mouse.move(x, y)
            tip = page.wait_for_selector("#map img[src^='/api/image/']")
            assert tip.get_attribute("src").rsplit("/", 1)[1] in near
            page.mouse.click(x, y)
            page.wait_for_selector("#results .result.filtered")
            assert page.locator("#results .result.filtered").first.get_attribute("data-id") in near

            # image -> image: the self-hit struck through, and kept with the toggle
            page.check("input[name=mode][value=image]")
            page.select_option("#image-pick", label="flowchart_0.png")
            page.click("#go")
            page.wait_for_selector("#results .result.filtered")
            filtered = page.locator("#results .result.filtered .name")
            assert filtered.inner_text() == "flowchart_0.png"
            decoration = filtered.evaluate("e => getComputedStyle(e).textDecorationLine")
            assert decoration == "line-through"
            page.check("#keep")
            page.wait_for_function(
                "(() => { const n = document.querySelector('#results .result .name');"
                " return n && !document.querySelector('#results .result.filtered')"
                " && n.textContent.includes('flowchart_0.png'); })()"
            )

            # hybrid: per-branch ranks and the matched caption terms marked
            page.check("input[name=mode][value=hybrid]")
            page.select_option("#image-pick", value="")
            page.fill("#query", "系统架构图")
            page.click("#go")
            page.wait_for_selector("#results .result .caption mark")
            first = page.locator("#results .result").first
            assert "bm25 #" in first.locator(".branches").inner_text()
            assert first.locator(".caption mark").first.inner_text() in (
                "系统架构图",
                "架构图",
                "系统",
            )
            page.screenshot(path=str(tmp_path / "preview.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert (tmp_path / "preview.png").stat().st_size > 10_000


# The first point's position on the page, and the ids of every point drawn within 2 px of it
# (duplicate images share a position; any of them may be the one under the mouse).
_FIRST_POINT = """(() => {
  const m = window.previewMap, box = m.el.getBoundingClientRect();
  const [x, y] = m.toPixel(m.xs[0], m.ys[0]);
  const near = m.points.filter((p) => {
    const [a, b] = m.toPixel(p.x, p.y);
    return Math.hypot(a - x, b - y) < 2;
  }).map((p) => p.id);
  return [box.left + x, box.top + y, near];
})()"""

_MARKED = """([text, terms]) => {
  const box = document.createElement('div');
  box.innerHTML = mark(text, terms);
  return [box.textContent, [...box.querySelectorAll('mark')].map((m) => m.textContent)];
}"""

_PAINTED_PIXELS = """(() => {
  const c = document.querySelector('#map canvas');
  const gl = c.getContext('webgl', {preserveDrawingBuffer: true});
  const px = new Uint8Array(c.width * c.height * 4);
  gl.readPixels(0, 0, c.width, c.height, gl.RGBA, gl.UNSIGNED_BYTE, px);
  let painted = 0;
  for (let i = 0; i < px.length; i += 4) if (px[i] + px[i + 1] + px[i + 2] < 740) painted++;
  return painted;
})()"""


def test_projection_matches_pca_by_svd() -> None:
    import numpy as np
    from llama_index.packs.clip_hybrid.preview import Projection

    rng = np.random.default_rng(0)
    data = rng.standard_normal((500, 16)).astype(np.float32) * np.linspace(5, 0.5, 16)
    projection = Projection.fit(data)
    centered = data - data.mean(axis=0)
    _, singular, vt = np.linalg.svd(centered, full_matrices=False)
    assert np.allclose(np.abs(projection.axes), np.abs(vt[:2]), atol=1e-3)
    variance = singular**2 / (singular**2).sum()
    assert projection.explained == pytest.approx(tuple(variance[:2]), abs=1e-4)
    xy = projection.transform(data)
    assert xy.shape == (500, 2)
    assert np.allclose(np.abs(xy), np.abs(centered @ vt[:2].T), atol=1e-2)
    assert projection.transform(data[0]).shape == (1, 2)


def test_umap_projection_keeps_clusters_and_places_queries() -> None:
    import numpy as np
    from llama_index.packs.clip_hybrid.preview import UmapProjection, fit_projection

    require(importlib.util.find_spec("umap") is not None, "umap-learn (the [umap] extra)")
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((3, 64)) * 4
    data = np.concatenate([c + rng.standard_normal((40, 64)) for c in centres])
    labels = np.repeat(np.arange(3), 40)
    projection = fit_projection(data.astype(np.float32), "umap")
    assert isinstance(projection, UmapProjection) and projection.explained is None
    xy = projection.embedding
    assert xy.shape == (120, 2) and np.isfinite(xy).all()
    # every point's nearest 2D neighbour is from its own cluster
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(120) * 1e9
    assert (labels[dist.argmin(axis=1)] == labels).mean() > 0.95
    # a new point near cluster 2 lands among cluster 2's points
    (q,) = projection.transform(centres[2] + rng.standard_normal(64) * 0.5)
    assert labels[np.linalg.norm(xy - q, axis=1).argmin()] == 2
    # too few images for UMAP: the PCA map, said so
    assert fit_projection(data[:3].astype(np.float32), "umap").method == "pca"
    with pytest.raises(ValueError, match="pca, umap"):
        fit_projection(data, "tsne")


def test_preview_app_with_the_umap_map(server) -> None:
    from llama_index.packs.clip_hybrid.preview import PreviewApp

    require(importlib.util.find_spec("umap") is not None, "umap-learn (the [umap] extra)")
    _, pack = server
    app = PreviewApp(pack, projection="umap")
    points = app.points()
    assert points["projection"] == "umap" and points["explained"] is None
    assert len(points["points"]) == pack.store.count()
    out = app.search({"mode": "text", "query": "a bar chart", "top_k": 3})
    assert out["query_point"] is not None and all(r["x"] is not None for r in out["results"])
    with pytest.raises(ValueError, match="projection must be one of"):
        PreviewApp(pack, projection="tsne")


def test_twenty_concurrent_clients_get_what_one_client_gets(server) -> None:
    """Mixed searches from 20 threads at once: no errors, and each answer equals the answer
    to the same request made alone (one model, shared safely)."""
    from concurrent.futures import ThreadPoolExecutor

    url, _ = server
    points = json.loads(_get(url + "/api/points")[1])["points"]
    distinct = [
        {"mode": "text", "query": "a bar chart"},
        {"mode": "text", "query": "系统架构图"},
        {"mode": "hybrid", "query": "flowchart 流程"},
        *({"mode": "image", "image_id": p["id"]} for p in points[:5]),
    ]
    alone = [_post(url + "/api/search", r) for r in distinct]
    assert all(status == 200 and out["results"] for status, out in alone)
    order = [i % len(distinct) for i in range(80)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        together = list(pool.map(lambda i: _post(url + "/api/search", distinct[i]), order))
    assert [status for status, _ in together] == [200] * len(order)
    for i, (_, out) in enumerate(together):
        expected = alone[order[i]][1]
        assert [r["id"] for r in out["results"]] == [r["id"] for r in expected["results"]]
        assert [r["score"] for r in out["results"]] == pytest.approx(
            [r["score"] for r in expected["results"]], abs=1e-5
        )


@pytest.mark.parametrize("length", ["-1", "lots"])
def test_a_bad_content_length_is_refused_at_once(server, length: str) -> None:
    import socket
    from urllib.parse import urlparse

    url, _ = server
    address = urlparse(url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
        conn.sendall(
            f"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
            + b"x" * 4096  # and keeps sending: the server must not wait for the end
        )
        reply = conn.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400")


def test_the_map_follows_a_delete_and_an_ingest_of_as_many_images(
    milvus_uri, fast_clip, image_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The map was rebuilt only when the image count changed: one image deleted and
    another ingested left the deleted one on the map and the new one off it."""
    import shutil

    from llama_index.packs.clip_hybrid.preview import PreviewApp

    pack = ClipHybridPack(uri=milvus_uri, embed_model=fast_clip, captioner="none")
    try:
        pack.ingest(image_dir)
        app = PreviewApp(pack)
        before = {p["name"] for p in app.points()["points"]}
        gone = sorted(image_dir.rglob("*.png"))[0]
        new = tmp_path / "new_one.png"
        shutil.copyfile(sorted(image_dir.rglob("*.png"))[-1], new)
        pack.delete([gone])
        pack.ingest(new)
        after = {p["name"] for p in app.points()["points"]}
        assert len(after) == len(before)
        assert gone.name not in after and new.name in after
    finally:
        pack.close()
