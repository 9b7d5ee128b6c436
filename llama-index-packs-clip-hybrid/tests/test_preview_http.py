"""The preview's HTTP layer under hostile and unlucky clients, on 127.0.0.1 (real sockets)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.embeddings import MockEmbedding
from llama_index.packs.clip_hybrid import ClipHybridPack
from llama_index.packs.clip_hybrid.preview import PreviewApp, PreviewServer
from PIL import Image
from pydantic import PrivateAttr


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, sample_images, fast_clip) -> Path:  # type: ignore[no-untyped-def]
    """An index with OCR-like captions (a table captioner), built once for the module."""
    root = tmp_path_factory.mktemp("preview-http")
    images = root / "images"
    for sample in sample_images:
        target = images / sample.kind / sample.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample.path, target)
    big = images / "big" / "big.png"
    big.parent.mkdir()
    Image.new("RGB", (5000, 4000), "teal").save(big)
    table = {
        hashlib.sha256(p.read_bytes()).hexdigest(): f"Text: {p.parent.name} diagram & <b>"
        for p in images.rglob("*.png")
    }
    from llama_index.packs.clip_hybrid.captions.base import Captioner

    class Table(Captioner):
        name = "table"
        empty_is_failure = False

        async def acaption(self, image, *, timeout):  # type: ignore[no-untyped-def]
            from llama_index.packs.clip_hybrid import Caption

            return Caption(table.get(image.sha256, ""))

    db = root / "index.db"
    with ClipHybridPack(
        uri=str(db),
        embed_model=fast_clip,
        captioner=Table(),
        caption_embed=MockEmbedding(embed_dim=8),
        show_progress=False,
    ) as pack:
        pack.ingest(images)
    return db


@pytest.fixture
def running(indexed, fast_clip):  # type: ignore[no-untyped-def]
    """A freshly started server (nothing warmed) over the index, and its URL."""
    pack = ClipHybridPack(
        uri=str(indexed), embed_model=fast_clip, caption_embed=MockEmbedding(embed_dim=8)
    )
    server = PreviewServer(PreviewApp(pack), "127.0.0.1", 0, (), channel_timeout=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    pack.close()


def _call(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})} if data else headers or {}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _wait_until(condition: Any, what: str, timeout: float = 30) -> None:
    """Wait for a state of the server, not for a time: poll ``condition`` until true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _raw(server: PreviewServer, payload: bytes, *, wait: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=wait) as conn:
        conn.sendall(payload)
        chunks = []
        try:
            while data := conn.recv(65536):
                chunks.append(data)
        except TimeoutError:
            pass
    return b"".join(chunks)


def test_a_fresh_server_answers_its_first_searches(running) -> None:
    """No search is the first to open the collections: text, image and hybrid work at once
    (a fresh server used to answer 500, 'collection is in state released')."""
    _, url = running
    text = _call(url + "/api/search", {"mode": "text", "query": "a chart"})
    assert text[0] == 200, text
    hybrid = _call(url + "/api/search", {"mode": "hybrid", "query": "diagram"})
    assert hybrid[0] == 200 and json.loads(hybrid[1])["branches"], hybrid
    first = json.loads(text[1])["results"][0]["id"]
    assert _call(url + "/api/search", {"mode": "image", "image_id": first})[0] == 200


def test_head_answers_as_get_without_a_body(running) -> None:
    """Health checks and curl -I send HEAD: it was a 404."""
    _, url = running
    for path in ("/", "/api/status"):
        request = urllib.request.Request(url + path, method="HEAD")
        with urllib.request.urlopen(request, timeout=60) as res:
            assert res.status == 200 and res.read() == b""
            with urllib.request.urlopen(url + path, timeout=60) as got:
                assert res.headers["Content-Type"] == got.headers["Content-Type"]


def test_only_this_servers_host_names_are_served(running) -> None:
    server, url = running
    port = server.server_address[1]
    assert _call(url + "/api/status")[0] == 200
    for host in (f"127.0.0.1:{port}", "localhost", f"localhost:{port}"):
        assert _call(url + "/api/status", headers={"Host": host})[0] == 200
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
        status, body = _call(url + "/api/status", headers={"Host": host})
        assert status == 421 and b"own address" in body


@pytest.mark.parametrize(
    "host",
    [
        "[::1]evil.example",
        "[::1].evil.example:80",
        "localhost:evil.example",
        "localhost.",
        "localhost:99999",
        "loc alhost",
        "",
    ],
)
def test_a_host_header_is_a_name_and_a_port_or_nothing(running, host: str) -> None:
    server, _ = running
    reply = _raw(
        server,
        f"GET /api/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.1 421"), (host, reply[:80])


def test_a_server_on_every_interface_refuses_names_it_was_not_given(indexed, fast_clip) -> None:
    """Bound to 0.0.0.0 it answers IP addresses (no DNS rebinding without a name), its
    loopback and host names, and --allow-host names; not a stranger's name. With an
    allowed name, loopback still works (it used to be refused)."""
    pack = ClipHybridPack(uri=str(indexed), embed_model=fast_clip, captioner="none")
    for extra, named in (((), None), (("mybox.lan",), "mybox.lan")):
        server = PreviewServer(PreviewApp(pack), "0.0.0.0", 0, extra, channel_timeout=2)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            port = server.server_address[1]
            url = f"http://127.0.0.1:{port}/api/status"
            for host in (f"127.0.0.1:{port}", "localhost", f"10.1.2.3:{port}", f"[::1]:{port}"):
                assert _call(url, headers={"Host": host})[0] == 200, (extra, host)
            assert _call(url, headers={"Host": socket.gethostname()})[0] == 200
            assert _call(url, headers={"Host": f"evil.example:{port}"})[0] == 421
            if named:
                assert _call(url, headers={"Host": f"{named}:{port}"})[0] == 200
        finally:
            server.shutdown()
    pack.close()


def test_cross_origin_writes_are_refused(running) -> None:
    server, url = running
    query = json.dumps({"mode": "text", "query": "x"}).encode()
    plain = _call(url + "/api/search", query, {"Content-Type": "text/plain"})
    form = _call(url + "/api/search", query, {"Content-Type": "application/x-www-form-urlencoded"})
    assert plain[0] == form[0] == 415
    other = _call(url + "/api/search", query, {"Origin": "http://evil.example"})
    assert other[0] == 403
    port = server.server_address[1]
    for origin in (f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}", "null"):
        assert _call(url + "/api/search", query, {"Origin": origin})[0] == 403, origin
    own = _call(
        url + "/api/search", query, {"Origin": f"http://127.0.0.1:{server.server_address[1]}"}
    )
    assert own[0] == 200


def test_stalled_and_half_sent_requests_hold_no_thread_and_time_out(running) -> None:
    """Twenty clients that promise a body and send a few bytes: the server's threads do
    not grow, others are served meanwhile, and the stalled ones are closed (timeout)."""
    server, url = running
    _call(url + "/api/status")  # the worker threads exist
    before = threading.active_count()
    stalled = []
    for _ in range(20):
        conn = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
        conn.sendall(
            b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b'\r\nContent-Length: 1000\r\n\r\n{"mode":'
        )
        stalled.append(conn)
    started = time.monotonic()
    assert _call(url + "/api/status")[0] == 200
    assert time.monotonic() - started < 5
    assert threading.active_count() <= before + 1
    closed = 0
    for conn in stalled:  # each read returns when the server closes it (2 s timeout)
        conn.settimeout(10)
        try:
            closed += conn.recv(4096) == b""
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass  # still open after 10 s: not closed
        conn.close()
    assert closed == 20


def test_a_chunked_body_is_one_request(running) -> None:
    server, _ = running
    body = json.dumps({"mode": "text", "query": "a chart", "top_k": 2}).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:9], body[9:]))
    reply = _raw(
        server,
        b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked + b"0\r\n\r\n",
    )
    assert reply.count(b"HTTP/1.1 ") == 1 and reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert len(json.loads(reply.split(b"\r\n\r\n", 1)[1])["results"]) == 2


def test_twenty_clients_at_a_fresh_server_all_get_answers(running) -> None:
    """Twenty clients at once against a server that just started (a backlog of 1024, a
    fixed pool of workers): every request answered, none reset."""
    _, url = running
    requests: list[tuple[str, Any]] = [
        ("/api/status", None),
        ("/api/points", None),
        ("/api/search", {"mode": "text", "query": "a bar chart"}),
        ("/api/search", {"mode": "hybrid", "query": "diagram 架构"}),
    ]
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(
            pool.map(lambda i: _call(url + requests[i % 4][0], requests[i % 4][1]), range(60))
        )
    assert [status for status, _ in results] == [200] * 60


def test_malformed_input_is_a_4xx_not_a_500(running, indexed) -> None:
    _, url = running
    first = json.loads(_call(url + "/api/search", {"mode": "text", "query": "x"})[1])["results"][0]
    cases: list[tuple[Any, int]] = [
        ({"mode": "image", "image_id": first["id"] + "\n"}, 400),  # `$` matched before \n
        (b'{"mode": "text", "query": "a\\ud800b"}', 400),  # a lone surrogate
        (b"[" * 100_000 + b"]" * 100_000, 400),  # deeper than any parser's recursion
        (b'{"mode": "text", "query": "x", "top_k": ' + b"9" * 5000 + b"}", 400),
        ({"mode": "text", "query": "x", "top_k": True}, 400),
        ({"mode": "image", "image_id": first["id"], "keep_self_hit": "false"}, 400),
    ]
    for body, status in cases:
        got, text = _call(url + "/api/search", body)
        assert got == status, (body if isinstance(body, dict) else body[:60], got, text)
    assert _call(url + "/api/image/" + first["id"] + "%0A")[0] == 400
    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, "PNG")  # 48M pixels, over the 40M upload limit
    upload = {"mode": "image", "image_b64": base64.b64encode(buf.getvalue()).decode()}
    got, text = _call(url + "/api/search", upload)
    assert got == 413 and b"pixels" in text


def test_thumbnails_are_made_once_small_and_cached(running) -> None:
    """Four clients asking at once for the thumbnail of a 5000x4000 PNG cost one decode;
    later requests come from the cache."""
    server, url = running
    points = json.loads(_call(url + "/api/points")[1])["points"]
    big = next(p["id"] for p in points if p["name"] == "big.png")
    made = server.app.thumbnails.made
    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(lambda _: _call(url + f"/api/image/{big}"), range(4)))
    assert {status for status, _ in replies} == {200}
    assert len({body for _, body in replies}) == 1
    assert server.app.thumbnails.made == made + 1
    with Image.open(io.BytesIO(replies[0][1])) as img:
        assert img.format == "JPEG" and max(img.size) <= 256
    assert _call(url + f"/api/image/{big}")[0] == 200 and server.app.thumbnails.made == made + 1


class _HeldEmbedding(MockEmbedding):
    """A caption embedder that stands in for a slow paid API: every query waits for the
    test to let it go (and counts the ones waiting)."""

    _gate: threading.Event = PrivateAttr(default_factory=threading.Event)
    _waiting: threading.Semaphore = PrivateAttr(default_factory=lambda: threading.Semaphore(0))

    def _get_query_embedding(self, query: str) -> list[float]:
        self._waiting.release()
        self._gate.wait(60)
        return super()._get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        import asyncio

        return await asyncio.to_thread(self._get_query_embedding, query)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        for _ in range(count):
            assert self._waiting.acquire(timeout=timeout), "the searches never started"

    def release(self) -> None:
        self._gate.set()


def test_status_map_and_thumbnails_answer_while_searches_queue(indexed, fast_clip) -> None:
    """More slow searches than search slots (twelve hybrid searches held in the caption
    embedder): status, the map and a thumbnail still answer at once, and every held
    search answers once the embedder does. With as many workers as search slots, the
    cheap requests queued behind the searches (bench_load: status p50 ~0.95 s)."""
    from llama_index.packs.clip_hybrid.preview.app import SEARCHES

    held = _HeldEmbedding(embed_dim=8)
    pack = ClipHybridPack(uri=str(indexed), embed_model=fast_clip, caption_embed=held)
    server = PreviewServer(PreviewApp(pack), "127.0.0.1", 0, (), channel_timeout=30)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    pool = ThreadPoolExecutor(max_workers=12)
    try:
        points = json.loads(_call(url + "/api/points")[1])["points"]
        searches = [
            pool.submit(_call, url + "/api/search", {"mode": "hybrid", "query": f"chart {i}"})
            for i in range(12)
        ]
        held.wait_for(SEARCHES)  # every slot is held; the other eight wait for one
        dispatcher = server._server.task_dispatcher  # waitress: workers running a request
        _wait_until(lambda: dispatcher.active_count >= 12, "the twelve searches on workers")
        for path in ("/api/status", "/api/points", f"/api/image/{points[0]['id']}"):
            request = urllib.request.Request(url + path)
            with urllib.request.urlopen(request, timeout=10) as res:
                assert res.status == 200, path
        assert not any(f.done() for f in searches)  # they were still queued
        held.release()
        assert [f.result(timeout=60)[0] for f in searches] == [200] * 12
    finally:
        held.release()
        pool.shutdown(wait=True)
        server.shutdown()
        pack.close()


def test_a_search_that_waits_too_long_for_a_slot_is_told_busy(
    indexed, fast_clip, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Every slot held by a search stuck in its caption embedder: the next search gets
    503 after SEARCH_WAIT instead of holding a worker thread for as long as they hang."""
    from llama_index.packs.clip_hybrid.preview import app as app_module

    monkeypatch.setattr(app_module, "SEARCH_WAIT", 0.5)
    held = _HeldEmbedding(embed_dim=8)
    pack = ClipHybridPack(uri=str(indexed), embed_model=fast_clip, caption_embed=held)
    server = PreviewServer(PreviewApp(pack), "127.0.0.1", 0, (), channel_timeout=30)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    pool = ThreadPoolExecutor(max_workers=app_module.SEARCHES)
    try:
        stuck = [
            pool.submit(_call, url + "/api/search", {"mode": "hybrid", "query": f"chart {i}"})
            for i in range(app_module.SEARCHES)
        ]
        held.wait_for(app_module.SEARCHES)
        status, body = _call(url + "/api/search", {"mode": "text", "query": "a chart"})
        assert status == 503 and "busy" in json.loads(body)["error"]
        held.release()
        assert [f.result(timeout=60)[0] for f in stuck] == [200] * app_module.SEARCHES
        assert _call(url + "/api/search", {"mode": "text", "query": "a chart"})[0] == 200
    finally:
        held.release()
        pool.shutdown(wait=True)
        server.shutdown()
        pack.close()
