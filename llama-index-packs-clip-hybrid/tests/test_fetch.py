"""Image URLs are fetched from the public internet only, whatever redirects and DNS say."""

from __future__ import annotations

import socket
import threading

import pytest
from PIL import Image


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2001:0:4136:e378::1", False),  # Teredo
        ("fec0::1", False),  # site-local
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
        ("::ffff:0:7f00:1", False),  # IPv4-translated 127.0.0.1
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_only_public_addresses_count_as_public(address, public) -> None:
    from llama_index.packs.clip_hybrid.images.fetch import is_public_address

    assert is_public_address(address) is public


class _Recorder:
    """A loopback HTTP server that serves one PNG at /x.png and redirects /go to ``target``."""

    def __init__(self, host: str, target: str = "") -> None:
        import io
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.paths: list[str] = []
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (5, 5, 5)).save(buf, format="PNG")
        png, recorder = buf.getvalue(), self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                recorder.paths.append(self.path)
                if self.path == "/go":
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)

        self.png = png
        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_image_urls_never_reach_loopback_even_through_a_redirect() -> None:
    from llama_index.packs.clip_hybrid.images.fetch import UrlRefusedError, fetch_public_url

    inner = _Recorder("127.0.0.2")  # stands for an internal service
    outer = _Recorder("127.0.0.1", target=inner.url + "/x.png")
    try:
        for url in (inner.url + "/x.png", f"http://localhost:{inner.url.rsplit(':', 1)[1]}/x.png"):
            with pytest.raises(UrlRefusedError, match="loopback, private or reserved"):
                fetch_public_url(url, max_bytes=1 << 20)
        for url in ("file:///etc/passwd", "ftp://example.com/x.png", "gopher://x"):
            with pytest.raises(UrlRefusedError, match="only http and https"):
                fetch_public_url(url, max_bytes=1 << 20)
        # The fetch machinery itself works (a policy that admits 127.0.0.1 only) ...
        only_outer = lambda address: address == "127.0.0.1"  # noqa: E731
        assert (
            fetch_public_url(outer.url + "/x.png", max_bytes=1 << 20, allow=only_outer) == outer.png
        )
        with pytest.raises(UrlRefusedError, match="larger than"):
            fetch_public_url(outer.url + "/x.png", max_bytes=10, allow=only_outer)
        # ... and a redirect is checked again where it leads: never dialled
        with pytest.raises(UrlRefusedError, match=r"127\.0\.0\.2"):
            fetch_public_url(outer.url + "/go", max_bytes=1 << 20, allow=only_outer)
        assert inner.paths == []  # the internal service was never reached
        assert outer.paths == ["/x.png", "/x.png", "/go"]
    finally:
        inner.close()
        outer.close()


class _FakeFtp:
    """A TCP server on loopback that greets as FTP and records every connection."""

    def __init__(self) -> None:
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                try:
                    conn.sendall(b"220 internal ftp\r\n")
                    conn.recv(1024)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("scheme", ["ftp", "file", "data"])
def test_a_redirect_to_another_scheme_is_refused_and_never_dialled(scheme: str) -> None:
    """An allowed host answering 302 to ftp://127.0.0.1/... made urllib's default FTP
    handler read the internal file: the guard never saw that second connection."""
    from llama_index.packs.clip_hybrid.images.fetch import UrlRefusedError, fetch_public_url

    ftp = _FakeFtp()
    target = {
        "ftp": f"ftp://127.0.0.1:{ftp.port}/secret.png",
        "file": "file:///etc/passwd",
        "data": "data:image/png;base64,AAAA",
    }[scheme]
    outer = _Recorder("127.0.0.1", target=target)
    only_outer = lambda address: address == "127.0.0.1"  # noqa: E731
    try:
        with pytest.raises(UrlRefusedError, match=r"redirected .* only http and https"):
            fetch_public_url(outer.url + "/go", max_bytes=1 << 20, allow=only_outer)
        assert ftp.connections == 0
    finally:
        outer.close()
        ftp.close()


def _one_reply(head: bytes, body_bytes: list[bytes], pause: float) -> str:
    """A loopback server that answers one request with ``head``, then the body pieces
    ``pause`` seconds apart, then closes; its URL."""
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(head)
                for piece in body_bytes:
                    time.sleep(pause)
                    conn.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the fetcher gave up on us: what the deadline test wants
        server.close()

    threading.Thread(target=answer, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}/a.png"


@pytest.mark.parametrize(
    ("head", "drip"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"x"),  # in the body
        (b"HTTP/1.1 200 OK\r\n", b"X-Slow: 1\r\n"),  # a header line at a time
    ],
    ids=["body", "headers"],
)
def test_a_slow_drip_cannot_hold_a_fetch_past_its_deadline(head: bytes, drip: bytes) -> None:
    """One piece every 0.3 s never trips a per-read timeout of 1 s; the whole fetch still
    ends at about its timeout, whether the server drips its body or its header lines."""
    import time

    from llama_index.packs.clip_hybrid.images.fetch import fetch_public_url

    url = _one_reply(head, [drip] * 20, 0.3)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="longer than 1 s"):
        fetch_public_url(url, max_bytes=10**6, timeout=1.0, allow=lambda _: True)
    assert time.monotonic() - started < 3  # 20 bytes would take 6 s


def test_a_body_shorter_than_its_content_length_is_an_error() -> None:
    from llama_index.packs.clip_hybrid.images.fetch import fetch_public_url

    url = _one_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", [b"x" * 12], 0)
    with pytest.raises(OSError, match="ended early"):
        fetch_public_url(url, max_bytes=10**6, timeout=5.0, allow=lambda _: True)


def test_a_url_with_a_password_is_refused_unsaid_and_never_dialled() -> None:
    """A ``user:password@`` URL (urllib reads it as a bad port, and said so with the
    password in the message) is refused before any connection, without the password; a
    redirect to one is refused too."""
    from llama_index.packs.clip_hybrid.images.fetch import UrlRefusedError, fetch_public_url

    server = _Recorder("127.0.0.1")
    try:
        host = server.url.split("//", 1)[1]
        for url in (f"http://alice:hunter2secretPW@{host}/x.png", f"http://alice@{host}/x.png"):
            with pytest.raises(UrlRefusedError, match="user name or password") as refused:
                fetch_public_url(url, max_bytes=1 << 20, allow=lambda _: True)
            assert "hunter2" not in str(refused.value) and "alice" not in str(refused.value)
        assert server.paths == []
        outer = _Recorder("127.0.0.1", target=f"http://bob:hunter2secretPW@{host}/x.png")
        try:
            with pytest.raises(UrlRefusedError, match="redirected to a URL with a user") as refused:
                fetch_public_url(outer.url + "/go", max_bytes=1 << 20, allow=lambda _: True)
            assert "hunter2" not in str(refused.value)
            assert outer.paths == ["/go"] and server.paths == []
        finally:
            outer.close()
    finally:
        server.close()
