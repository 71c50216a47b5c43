"""A byte-counting HTTP proxy on loopback in front of the host's Debian mirror.

It serves two kinds of client:

- suture, whose `--mirror FROM=TO` rewrites the mirror URL to `http://127.0.0.1:PORT/mN`:
  a request for `/mN/REST` is forwarded to the Nth mirror URL followed by `/REST`;
- apt (inside `docker build` or on the host), configured with this proxy as its HTTP proxy:
  a request for an absolute URL is forwarded as is.

Only URLs under the configured mirror URLs are forwarded; anything else gets 403, so the
proxy cannot be used to reach other hosts. Response body bytes are counted per request.
"""

from __future__ import annotations

import http.client
import http.server
import logging
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16
_UPSTREAM_TIMEOUT = 120.0
# Hop-by-hop headers are not forwarded (RFC 9110, section 7.6.1).
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade"}
)


@dataclass
class Counter:
    """Bytes and requests counted since the last reset, shared by the handler threads."""

    bytes: int = 0
    requests: int = 0
    urls: list[tuple[str, int, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, url: str, status: int, size: int) -> None:
        with self.lock:
            self.bytes += size
            self.requests += 1
            self.urls.append((url, status, size))

    def take(self) -> tuple[int, int, list[tuple[str, int, int]]]:
        """Return (bytes, requests, per-request records) and start counting from zero."""
        with self.lock:
            result = (self.bytes, self.requests, self.urls)
            self.bytes, self.requests, self.urls = 0, 0, []
            return result


class CountingProxy:
    """Forward GET/HEAD for the given mirror URLs and count the body bytes returned."""

    def __init__(self, mirror_urls: Sequence[str]) -> None:
        self.mirror_urls = [url.rstrip("/") for url in mirror_urls]
        self.counter = Counter()
        self._local = threading.local()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def mirror_options(self) -> list[str]:
        """Return suture `--mirror` options that send every mirror URL through this proxy.

        Longer URLs come first: suture applies the first matching prefix, and the main
        archive URL is often a prefix of the security archive URL.
        """
        options: list[str] = []
        order = sorted(range(len(self.mirror_urls)), key=lambda i: -len(self.mirror_urls[i]))
        for index in order:
            options += ["--mirror", f"{self.mirror_urls[index]}={self.url}/m{index}"]
        return options

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def resolve(self, target: str) -> str | None:
        """Map a request target to the upstream URL, or None when it is not a mirror URL."""
        if target.startswith("http://") or target.startswith("https://"):
            for base in self.mirror_urls:
                if target == base or target.startswith(base + "/"):
                    return target
            return None
        prefix, _, rest = target.lstrip("/").partition("/")
        if prefix.startswith("m") and prefix[1:].isdigit():
            index = int(prefix[1:])
            if index < len(self.mirror_urls):
                return f"{self.mirror_urls[index]}/{rest}"
        return None

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        """Return this thread's keep-alive connection to `netloc`, as a client would keep one."""
        pool: dict[tuple[str, str], http.client.HTTPConnection] = getattr(self._local, "pool", {})
        self._local.pool = pool
        key = (scheme, netloc)
        if key not in pool:
            if scheme == "https":
                pool[key] = http.client.HTTPSConnection(netloc, timeout=_UPSTREAM_TIMEOUT)
            else:
                pool[key] = http.client.HTTPConnection(netloc, timeout=_UPSTREAM_TIMEOUT)
        return pool[key]

    def _drop(self, scheme: str, netloc: str) -> None:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = getattr(self._local, "pool", {})
        connection = pool.pop((scheme, netloc), None)
        if connection is not None:
            connection.close()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("proxy: " + format, *args)

            def do_GET(self) -> None:
                self._forward(send_body=True)

            def do_HEAD(self) -> None:
                self._forward(send_body=False)

            def _forward(self, send_body: bool) -> None:
                upstream = proxy.resolve(self.path)
                if upstream is None:
                    self.send_error(403, "not a mirror URL")
                    return
                parts = urllib.parse.urlsplit(upstream)
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() not in _HOP_HEADERS and name.lower() != "host"
                }
                response = None
                for attempt in range(2):
                    connection = proxy._connection(parts.scheme, parts.netloc)
                    try:
                        connection.request(self.command, path, headers=headers)
                        response = connection.getresponse()
                        break
                    except (OSError, http.client.HTTPException) as error:
                        # The server may have closed a kept-alive connection, so reconnect once.
                        logger.info("proxy: %s %s failed (%s), reconnecting", self.command,
                                    upstream, error)
                        proxy._drop(parts.scheme, parts.netloc)
                        if attempt == 1:
                            self.send_error(502, "upstream failed")
                            return
                assert response is not None
                self.send_response(response.status, response.reason)
                length = response.getheader("Content-Length")
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_HEADERS:
                        self.send_header(name, value)
                chunked = length is None and send_body and response.status not in (204, 304)
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                size = 0
                if self.command != "HEAD":
                    while chunk := response.read(_CHUNK):
                        size += len(chunk)
                        if chunked:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        else:
                            self.wfile.write(chunk)
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                response.close()
                if response.will_close:
                    proxy._drop(parts.scheme, parts.netloc)
                proxy.counter.add(upstream, response.status, size)

        return Handler
