"""The preview's HTTP transport: PreviewApp behind waitress, with Host and cross-origin guards.

waitress (a maintained pure-Python WSGI server) gives what a hand-written server lacked:
request framing by the HTTP/1.1 rules (chunked bodies included), a fixed pool of worker
threads (a slow or stalled client holds a connection, never a thread), a timeout for
idle and half-sent requests, a listen backlog of 1024, and a cap on connections.

Guards in front of the app:

- **Host**: only loopback names, the address it was bound to and ``allow_hosts`` are
  served, so a web page on another origin cannot reach it through DNS rebinding (which
  needs a *name* the attacker controls). A server bound to every interface (``0.0.0.0``,
  ``::``) also answers any IP address and this machine's own host names; other names
  only when given in ``allow_hosts``. A Host header that is not a plain name or address
  with an optional port is refused.
- **Cross-origin writes**: a POST must be ``application/json`` (a form or ``text/plain``
  POST is what a page on another origin can send without asking), and an ``Origin``
  header, when the browser sends one, must be this server's scheme, host and port.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from ..redaction import package_logger
from .app import PreviewApp, Response, json_response
from .requests import MAX_BODY_BYTES

logger = package_logger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
#: Worker threads: requests served at once. Searches are limited apart (app.SEARCHES);
#: the other threads keep status, the map and thumbnails answering while searches queue.
THREADS = 32
#: Seconds a connection may sit idle or half-sent before it is closed.
CHANNEL_TIMEOUT = 30
#: Open connections at most (more wait in the listen backlog).
CONNECTION_LIMIT = 100


_HOST_HEADER = re.compile(
    r"^(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))(?::(?P<port>\d{1,5}))?$"
)


def _host_and_port(value: str) -> tuple[str, int | None] | None:
    """The host and port of a Host header or an Origin's netloc (``[::1]:8000`` ->
    ``("::1", 8000)``); None for anything else (a space, a second colon, text after ``]``)."""
    match = _HOST_HEADER.match(value.lower())
    if match is None:
        return None
    port = match["port"]
    if port is not None and not 0 < int(port) < 65536:
        return None
    return match["v6"] or match["name"], int(port) if port else None


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which Host values a server answers (see the module docstring)."""

    def __init__(self, bind_host: str, extra: Iterable[str] = ()) -> None:
        self.wildcard = bind_host in WILDCARD_HOSTS
        names = {*LOOPBACK_HOSTS, bind_host.lower(), *(h.lower() for h in extra)}
        if self.wildcard:
            for own in (socket.gethostname(), socket.getfqdn()):
                names.add(own.lower())
        self.names = frozenset(n for n in names if n)

    def allows(self, host: str) -> bool:
        return host in self.names or (self.wildcard and _is_ip_address(host))


class Guarded:
    """The WSGI application: the Host and cross-origin checks, then :class:`PreviewApp`."""

    def __init__(self, app: PreviewApp, hosts: HostPolicy) -> None:
        self.app = app
        self.hosts = hosts

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        response = self._respond(environ)
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Cache-Control", response.cache),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        ]
        start_response(f"{response.status} {_REASONS.get(response.status, 'Error')}", headers)
        # HEAD (health checks, curl -I): the GET's status and headers, no body
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [response.body]

    def _respond(self, environ: dict[str, Any]) -> Response:
        method = environ.get("REQUEST_METHOD", "GET")
        header = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        parsed = _host_and_port(header)
        if parsed is None or not self.hosts.allows(parsed[0]):
            return json_response({"error": "this server answers to its own address only"}, 421)
        if method == "POST":
            kind = (environ.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower()
            if kind != "application/json":
                return json_response({"error": "send JSON (Content-Type: application/json)"}, 415)
            origin = environ.get("HTTP_ORIGIN")
            if origin is not None and not _same_origin(origin, parsed):
                return json_response({"error": "cross-origin requests are refused"}, 403)
        body = b""
        if method == "POST":
            try:  # waitress has checked the framing (and read a chunked body whole)
                length = max(0, int(environ.get("CONTENT_LENGTH") or 0))
            except ValueError:
                return json_response({"error": "a bad Content-Length"}, 400)
            body = environ["wsgi.input"].read(min(length, MAX_BODY_BYTES + 1))
        path = environ.get("PATH_INFO", "/")
        if environ.get("QUERY_STRING"):
            path = f"{path}?{environ['QUERY_STRING']}"
        return self.app.handle("GET" if method == "HEAD" else method, path, body)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    421: "Misdirected Request",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _same_origin(origin: str, host: tuple[str, int | None]) -> bool:
    """Whether a browser's ``Origin`` is this server as the request reached it: scheme
    http (the server speaks nothing else), the Host's name and port (80 when absent)."""
    parts = urlsplit(origin)
    theirs = _host_and_port(parts.netloc)
    if parts.scheme != "http" or theirs is None:
        return False
    return (theirs[0], theirs[1] or 80) == (host[0], host[1] or 80)


class PreviewServer:
    """A waitress server for :class:`PreviewApp` (not started): ``serve_forever()``, then
    ``shutdown()`` from another thread; ``server_address`` is ``(host, port)``."""

    def __init__(
        self,
        app: PreviewApp,
        host: str,
        port: int,
        allow_hosts: Iterable[str] = (),
        *,
        channel_timeout: int = CHANNEL_TIMEOUT,
    ) -> None:
        from waitress.server import create_server

        self.app = app
        self._server = create_server(
            Guarded(app, HostPolicy(host, allow_hosts)),
            host=host,
            port=port,
            threads=THREADS,
            channel_timeout=channel_timeout,
            cleanup_interval=max(1, min(30, channel_timeout)),
            connection_limit=CONNECTION_LIMIT,
            max_request_body_size=MAX_BODY_BYTES,
            ident="clip-hybrid-preview",
            expose_tracebacks=False,
            clear_untrusted_proxy_headers=True,
        )
        self.server_address = (host, int(self._server.effective_port))
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        try:
            self._server.run()
        except OSError:  # the socket closed by shutdown()
            if not self._stopped.is_set():
                raise

    def shutdown(self) -> None:
        """Stop: the worker threads first (a request being answered finishes), then the
        sockets (closing them first broke a reply in flight with EBADF)."""
        self._stopped.set()
        self._server.task_dispatcher.shutdown()
        self._server.close()

    def server_close(self) -> None:
        """Kept for callers of the stdlib server's interface: shutdown() closed it."""


def make_server(
    pack: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    projection: str = "pca",
    allow_hosts: Iterable[str] = (),
) -> PreviewServer:
    """A server for the page (not started); ``port=0`` picks a free one."""
    return PreviewServer(PreviewApp(pack, projection=projection), host, port, allow_hosts)


def serve(
    pack: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    ready: Callable[[str], None] | None = None,
    projection: str = "pca",
    allow_hosts: Iterable[str] = (),
) -> None:
    """Serve until interrupted; ``ready`` gets the URL once the index is open and the map
    is drawn (the first request does not pay for them)."""
    server = make_server(pack, host, port, projection=projection, allow_hosts=allow_hosts)
    server.app.warm()
    shown = f"[{host}]" if ":" in host else host
    if ready is not None:
        ready(f"http://{shown}:{server.server_address[1]}/")
    try:
        server.serve_forever()
    finally:
        server.shutdown()
