"""An HTTP proxy in front of an S3 endpoint (moto's server) that injects faults on demand.

    proxy = FaultProxy("http://127.0.0.1:5000").start()   # proxy.url -> AWS_ENDPOINT_URL
    proxy.inject("error", 3)   # the next 3 requests answer 503 ServiceUnavailable
    proxy.inject("drop", 2)    # the next 2 requests: connection closed, no answer
    proxy.inject("slow", 4, delay_s=2.0)   # the next 4 requests wait 2 s, then pass

Every other request is forwarded unchanged. `served`/`faulted` count what happened, per kind.
Runs in threads of the process that starts it (the bench, a test), so that process decides when
the store misbehaves while the worker's runs talk to the proxy.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULT_KINDS = ("error", "drop", "slow")
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}
_ERROR_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
               b"<Message>injected fault</Message></Error>")


class FaultProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0):
        up = urlsplit(upstream)
        self.upstream = (up.hostname or "127.0.0.1", up.port or 80)
        self._plan: list[tuple[str, float]] = []  # (kind, delay) for the next requests, in order
        self._lock = threading.Lock()
        self.served: Counter[str] = Counter()
        self.faulted: Counter[str] = Counter()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def inject(self, kind: str, count: int = 1, *, delay_s: float = 2.0) -> None:
        """The next `count` requests get the fault `kind` (error, drop or slow)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; kinds are {FAULT_KINDS}")
        with self._lock:
            self._plan.extend([(kind, delay_s)] * count)

    def pending(self) -> int:
        with self._lock:
            return len(self._plan)

    def clear(self) -> None:
        with self._lock:
            self._plan.clear()

    def _next_fault(self) -> tuple[str, float] | None:
        with self._lock:
            return self._plan.pop(0) if self._plan else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _relay(self) -> None:
                body = self._body()
                fault = proxy._next_fault()
                if fault is not None:
                    kind, delay = fault
                    proxy.faulted[kind] += 1
                    if kind == "drop":
                        self.close_connection = True
                        self.connection.shutdown(2)  # no answer at all
                        return
                    if kind == "error":
                        self.send_response(503)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(_ERROR_BODY)))
                        self.end_headers()
                        self.wfile.write(_ERROR_BODY)
                        return
                    time.sleep(delay)  # slow: then answered normally
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() in _HOP or (k.lower() == "content-length" and self.command != "HEAD"):
                            continue
                        self.send_header(k, v)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()
                proxy.served[self.command] += 1

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay  # noqa: N815

        return Handler
