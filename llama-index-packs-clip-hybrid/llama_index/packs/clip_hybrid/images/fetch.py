"""Fetching an image URL without becoming a proxy into the user's network (SSRF).

Image URLs are fetched only when a user allows it (``allow_image_urls=True``), and then
never from loopback, private, link-local (cloud metadata at 169.254.169.254), shared,
multicast or reserved addresses, nor from IPv6 ranges that reach IPv4 hosts (NAT64
``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo ``2001::/32``) or site-local ``fec0::/10``.
The check is made on the address each connection actually uses (the host is resolved
once, checked, and that address is dialled), so a redirect or a DNS answer that changes
between check and connect cannot reach an internal service.

Only http and https are spoken: the opener has no FTP, file or data handler (urllib's
default one has them all), and a redirect anywhere but http(s) is refused, so a public
server cannot bounce the fetch to ``ftp://127.0.0.1/...``. Environment proxies are
ignored: a proxy would be the host we connect to. A URL with a ``user:password@`` part is
refused (the password would travel with the image's metadata and into messages).

``timeout`` bounds the whole fetch: connecting, the status and header lines, every
redirect and the body. A watchdog shuts the sockets down when it runs out, so a server
that sends a header line now and then cannot hold a run either. (During a TLS handshake
only the socket's own timeout, the time left when it began, applies to each read.)
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any


class UrlRefusedError(ValueError):
    """A URL that may not be fetched; the message says why."""


#: IPv6 ranges that lead to IPv4 hosts or are not globally unique (Python's is_global
#: counts some of them as global): NAT64, 6to4, Teredo, site-local, IPv4-compatible
#: (``::a.b.c.d``) and IPv4-translated (``::ffff:0:a.b.c.d``).
_NOT_PUBLIC_V6 = tuple(
    ipaddress.ip_network(net)
    for net in (
        *("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32", "fec0::/10"),
        *("::/96", "::ffff:0:0:0/96"),
    )
)


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address (IPv4-mapped IPv6 judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif any(ip in net for net in _NOT_PUBLIC_V6):
            return False
    return ip.is_global and not ip.is_multicast


def _guarded_connection(
    allow: Callable[[str], bool], watched: list[socket.socket], deadline: float
) -> Callable[..., socket.socket]:
    """``socket.create_connection`` that dials only addresses ``allow`` accepts, each
    socket added to ``watched`` and given no more than the time left until ``deadline``."""

    def connect(
        address: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> socket.socket:
        host, port = address
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UrlRefusedError(f"cannot resolve {host}: {exc}") from exc
        for *_, sockaddr in infos:
            if not allow(str(sockaddr[0])):
                raise UrlRefusedError(
                    f"{host} resolves to {sockaddr[0]}, a loopback, private or reserved "
                    "address; image URLs may only point to the public internet"
                )
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in infos:  # the checked addresses, no new lookup
            sock = socket.socket(family, kind, proto)
            watched.append(sock)
            try:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        raise error or OSError(f"cannot connect to {host}")

    return connect


def _opener(
    allow: Callable[[str], bool], watched: list[socket.socket], deadline: float
) -> urllib.request.OpenerDirector:
    """urllib with every connection (redirects included) dialled through the check, and
    its sockets (TLS ones too) in ``watched``."""
    connect = _guarded_connection(allow, watched, deadline)

    # http.client sets ``self._create_connection = socket.create_connection`` in __init__;
    # ours replaces it per connection (https too: it wraps the socket this returns, and
    # that wrapped socket is the one to shut down).
    class HttpConnection(http.client.HTTPConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._create_connection = connect

        def connect(self) -> None:
            super().connect()
            watched.append(self.sock)

    class HttpsConnection(http.client.HTTPSConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._create_connection = connect

        def connect(self) -> None:
            super().connect()
            watched.append(self.sock)

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(HttpConnection, req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(HttpsConnection, req, context=self._context)  # type: ignore[attr-defined]

    class Redirects(urllib.request.HTTPRedirectHandler):
        """Follows redirects to http(s) only (urllib's own follows ftp:// too)."""

        def http_error_302(
            self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any
        ) -> Any:
            location = headers.get("location") or headers.get("uri") or ""
            target = urllib.parse.urljoin(req.full_url, location)
            if not target.lower().startswith(("http://", "https://")):
                raise UrlRefusedError(
                    f"the server redirected to {target[:60]!r}: only http and https are followed"
                )
            if _has_credentials(target):
                raise UrlRefusedError("the server redirected to a URL with a user name or password")
            return super().http_error_302(req, fp, code, msg, headers)

        http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    # Built by hand, not with build_opener: that adds FTP, file and data handlers. No
    # proxies from the environment: the proxy would be the host we connect to.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler({}),
        Http(),
        Https(),
        Redirects(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _has_credentials(url: str) -> bool:
    return "@" in urllib.parse.urlsplit(url).netloc


def fetch_public_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float = 30.0,
    allow: Callable[[str], bool] = is_public_address,
) -> bytes:
    """The body of ``url`` (http or https, at most ``max_bytes``), fetched only from
    addresses ``allow`` accepts (public ones by default), within ``timeout`` seconds in
    all (connection, headers, redirects and body: a server sending a byte now and then
    cannot hold a run), and whole (a body shorter than its ``Content-Length`` is an
    error, not a truncated image)."""
    if not url.lower().startswith(("http://", "https://")):
        raise UrlRefusedError(f"only http and https image URLs are fetched, not {url[:40]!r}")
    if _has_credentials(url):
        raise UrlRefusedError(
            "the URL has a user name or password, which would be kept with the image and "
            "shown in messages: serve the image without them, or download it and pass its path"
        )
    watched: list[socket.socket] = []
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        for sock in list(watched):  # a blocked read returns at once
            with contextlib.suppress(OSError):  # closed already: nothing to stop
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        body = _read(url, max_bytes, _opener(allow, watched, time.monotonic() + timeout))
    except Exception:
        if expired.is_set():
            raise TimeoutError(f"the image URL took longer than {timeout:g} s") from None
        raise
    finally:
        watchdog.cancel()
    if expired.is_set():  # the shut-down socket may read as a clean end of the body
        raise TimeoutError(f"the image URL took longer than {timeout:g} s")
    return body


def _read(url: str, max_bytes: int, opener: urllib.request.OpenerDirector) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        with opener.open(url) as response:
            while size <= max_bytes:
                chunk = response.read1(min(65536, max_bytes + 1 - size))
                if not chunk:
                    if response.length:  # bytes promised by Content-Length, never sent
                        raise http.client.IncompleteRead(b"".join(chunks), response.length)
                    break
                chunks.append(chunk)
                size += len(chunk)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, UrlRefusedError):
            raise exc.reason from None
        raise
    except http.client.IncompleteRead as exc:
        raise OSError(f"the image URL's body ended early ({len(exc.partial)} bytes)") from None
    if size > max_bytes:
        raise UrlRefusedError(f"the image at the URL is larger than {max_bytes // 2**20} MB")
    return b"".join(chunks)
