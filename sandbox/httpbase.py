"""Plumbing shared by the sandbox CRM servers: a threaded HTTP server with knobs.

A sandbox subclasses `SandboxServer` and implements `handle(req) -> Response`. The base
class gives it: a `ThreadingHTTPServer` on 127.0.0.1 in a daemon thread, per-request
latency, seeded fault injection, a thread-safe request log, and rate-limit helpers.

    class MyCrm(SandboxServer):
        def handle(self, req):
            return Response.json({"ok": True})

    with MyCrm() as srv:
        requests.get(srv.url + "/x")

Fault kinds (`faults=`, drawn at `fault_rate`, or forced with `fail_next(kind)`):
- "500"       HTTP 500 with the subclass's `fault_response()` body
- "timeout"   hold the connection `timeout_hold_s` seconds, then close without a reply
- "reset"     close the connection without a reply at once
- "truncated" the real response, body cut in half (Content-Length matches the cut body)
- "badjson"   HTTP 200, declared JSON, body is an HTML error page
- "html"      HTTP 200, text/html: a proxy's or captive portal's page instead of the API's answer
- "503"       HTTP 503, text/html: a proxy's or load balancer's "Service Unavailable" page, not
              the CRM's own answer (which a client must tell from the CRM's JSON 503s); not in
              FAULT_KINDS, which the fault-rate tests draw from
- "limit"     the CRM's rate-limit answer from the subclass's `limit_response()` (amoCRM 429,
              Bitrix24 503 QUERY_LIMIT_EXCEEDED), the request not served

`request_log` rows: {method, path, params, status (None when no reply), fault, at}.

Arrival: a portal counts a request against its limits when it arrives, as a real portal's
front end does, not when a thread of this process gets round to it (a garbage collection or
a busy CPU can hold that back by 100 ms or more, and a request held that long would count as
arriving with the next ones). On Linux each connection asks the kernel to stamp what it
receives (SO_TIMESTAMPNS); `Request.arrived` is that stamp on the `time.monotonic()` scale,
None where there is none (TLS, other systems). `SlidingWindow.allow(at)` takes it.
"""

from __future__ import annotations

import bisect
import collections
import json
import random
import socket
import ssl
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Request", "Response", "SandboxServer", "SlidingWindow", "LeakyBucket", "FAULT_KINDS"]

FAULT_KINDS = ("500", "timeout", "reset", "truncated", "badjson", "html", "limit")
# Kinds a test asks for by name (`fail_next`, `faults=`) but that FAULT_KINDS, the set the
# fault-rate tests draw from, leaves out.
MORE_FAULT_KINDS = ("503",)
# Linux's SO_TIMESTAMPNS (SCM_TIMESTAMPNS in the ancillary data: a struct timespec); Python's
# socket module does not name it.
SO_TIMESTAMPNS = 35 if sys.platform.startswith("linux") else None


@dataclass
class Request:
    """One incoming request, parsed once."""

    method: str
    path: str
    query: str
    pairs: list[tuple[str, str]]  # query pairs in order, repeats kept
    headers: dict[str, str]  # header names lower-cased
    body: bytes = b""
    client: str = "127.0.0.1"  # the peer's address
    arrived: float | None = None  # when its first bytes reached this host (module doc)

    @property
    def params(self) -> dict:
        """Query as {key: value}; a repeated key gives a list of its values."""
        out: dict = {}
        for k, v in self.pairs:
            if k in out:
                out[k] = out[k] + [v] if isinstance(out[k], list) else [out[k], v]
            else:
                out[k] = v
        return out

    def get(self, key: str, default=None):
        for k, v in self.pairs:
            if k == key:
                return v
        return default

    def json(self):
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls, obj, status: int = 200, content_type: str = "application/json", headers: dict | None = None
    ) -> "Response":
        body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(status, body, content_type, headers or {})

    @classmethod
    def empty(cls, status: int = 204) -> "Response":
        return cls(status, b"", "")


class SlidingWindow:
    """At most `rate` events in any `window` seconds (amoCRM-style per-second cap).

    `allow(at)`: an event that happened at `at` (the clock's scale; default now). Events may
    come in out of order (a request stamped on arrival, handled after a later one): one is
    refused when some window of `window` seconds holding it would hold more than `rate`."""

    def __init__(self, rate: float, window: float = 1.0, clock=time.monotonic):
        self.rate, self.window, self.clock = rate, window, clock
        self._times: list[float] = []  # sorted
        self._lock = threading.Lock()

    def allow(self, at: float | None = None) -> bool:
        with self._lock:
            now = self.clock()
            t = now if at is None else min(at, now)
            # an event that came in late can still share a window with ones 2 windows back
            del self._times[: bisect.bisect_right(self._times, now - 2 * self.window)]
            times = self._times[:]
            bisect.insort(times, t)
            # the fullest window holding t ends at t or at a later event less than a window on
            for end in times[bisect.bisect_left(times, t) : bisect.bisect_left(times, t + self.window)]:
                held = bisect.bisect_right(times, end) - bisect.bisect_right(times, end - self.window)
                if held > self.rate:
                    return False
            self._times = times
            return True


class LeakyBucket:
    """A bucket of `size` that drains `drain` per second (Bitrix24-style limiter)."""

    def __init__(self, size: float, drain: float, clock=time.monotonic):
        self.size, self.drain, self.clock = size, drain, clock
        self.level = 0.0
        self._at = clock()
        self._lock = threading.Lock()

    def allow(self, cost: float = 1.0) -> bool:
        with self._lock:
            now = self.clock()
            self.level = max(0.0, self.level - (now - self._at) * self.drain)
            self._at = now
            if self.level + cost > self.size:
                return False
            self.level += cost
            return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections like in prod
    arrived: float | None = None

    def setup(self):
        super().setup()
        self.stamped = False  # the listening socket asked for stamps (_Server.server_bind)
        if SO_TIMESTAMPNS is not None and not isinstance(self.connection, ssl.SSLSocket):
            try:
                self.stamped = bool(self.connection.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS))
            except OSError:
                pass

    def handle_one_request(self):
        # Peek (consume nothing) at the next request's first byte for the kernel's stamp of
        # its arrival. Clients send one request at a time on a connection (no pipelining), so
        # nothing of it sits in rfile's buffer yet: the peek waits as readline would.
        self.arrived = _arrival(self.connection) if self.stamped else None
        super().handle_one_request()

    def _any(self):
        self.server.owner._serve(self)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

    def log_message(self, *args):  # keep test output quiet
        pass


def _arrival(sock) -> float | None:
    """The kernel's receive stamp of the bytes waiting on `sock`, on the time.monotonic()
    scale; None without one (the peer closed, or no stamp)."""
    try:
        data, ancillary, _flags, _addr = sock.recvmsg(1, socket.CMSG_SPACE(16), socket.MSG_PEEK)
    except (OSError, ValueError):
        return None
    for level, kind, raw in ancillary:
        if data and level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
            sec, nsec = struct.unpack("qq", raw[:16])
            return time.monotonic() - max(0.0, time.time() - (sec + nsec / 1e9))
    return None


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops the SYNs of a burst of parallel clients (each
    # then waits a second to retry); a real portal's front end accepts them.
    request_queue_size = 128

    def server_bind(self):
        # on the listening socket, so a connection's first request, often in before the
        # connection is accepted, is stamped too (accepted sockets inherit the option)
        if SO_TIMESTAMPNS is not None:
            try:
                self.socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                pass
        super().server_bind()


class SandboxServer:
    """Base class: start()/stop()/context manager, `url`, `request_log`, knobs."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0,
        fault_rate: float = 0.0,
        faults=("500",),
        seed: int = 1,
        timeout_hold_s: float = 0.0,
        https: bool = False,
    ):
        self.host, self.port = host, port
        self.https = https
        self.cert_path: str | None = None  # with https: pass as `verify=` to requests
        self.latency_ms = latency_ms
        self.fault_rate = fault_rate
        self.faults = tuple(faults)
        self.timeout_hold_s = timeout_hold_s
        self.request_log: list[dict] = []
        self._log_lock = threading.Lock()
        self._fault_rng = random.Random(seed)
        self._forced: collections.deque = collections.deque()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.scheme = "http"

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self):
        httpd = _Server((self.host, self.port), _Handler)
        httpd.daemon_threads = True
        httpd.owner = self
        self._wrap_socket(httpd)
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def _wrap_socket(self, httpd) -> None:
        """With https=True: a throwaway self-signed certificate for 127.0.0.1 (needs openssl)."""
        if not self.https:
            return
        import ssl
        import subprocess
        import tempfile

        d = tempfile.mkdtemp(prefix="sandbox-tls-")
        cert, key = f"{d}/cert.pem", f"{d}/key.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                key,
                "-out",
                cert,
            ],
            check=True,
            capture_output=True,
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self.cert_path = cert
        self.scheme = "https"

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    # ---- knobs ---------------------------------------------------------------------------
    def fail_next(self, kind: str = "500", times: int = 1) -> None:
        """Force the next `times` requests to fail with fault `kind` (deterministic tests)."""
        if kind not in FAULT_KINDS + MORE_FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        self._forced.extend([kind] * times)

    def clear_log(self) -> None:
        with self._log_lock:
            self.request_log.clear()

    def requests_to(self, path_part: str) -> list[dict]:
        """Logged requests whose path contains `path_part`."""
        with self._log_lock:
            return [r for r in self.request_log if path_part in r["path"]]

    # ---- subclass API --------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        raise NotImplementedError

    def fault_response(self) -> Response:
        return Response.json({"error": "internal server error"}, 500)

    def limit_response(self) -> Response:
        """The answer to a request over the rate limit; a subclass sends its CRM's own."""
        return Response.json({"error": "too many requests"}, 429)

    # ---- internals -----------------------------------------------------------------------
    def _pick_fault(self) -> str | None:
        with self._log_lock:
            if self._forced:
                return self._forced.popleft()
            if self.fault_rate and self._fault_rng.random() < self.fault_rate:
                return self._fault_rng.choice(self.faults)
        return None

    def _log(self, req: Request, status: int | None, fault: str | None) -> None:
        with self._log_lock:
            self.request_log.append(
                {
                    "method": req.method,
                    "path": req.path,
                    "params": req.params,
                    "status": status,
                    "fault": fault,
                    "at": time.time(),
                }
            )

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        n = int(h.headers.get("Content-Length") or 0)
        req = Request(
            h.command,
            parts.path,
            parts.query,
            parse_qsl(parts.query, keep_blank_values=True),
            {k.lower(): v for k, v in h.headers.items()},
            h.rfile.read(n) if n else b"",
            h.client_address[0],
            h.arrived,
        )
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        fault = self._pick_fault()
        if fault in ("timeout", "reset"):
            self._log(req, None, fault)
            if fault == "timeout" and self.timeout_hold_s:
                time.sleep(self.timeout_hold_s)
            h.close_connection = True
            return
        if fault == "500":
            resp = self.fault_response()
        elif fault == "limit":
            resp = self.limit_response()
        elif fault == "badjson":
            resp = Response(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "application/json")
        elif fault == "503":
            resp = Response(
                503,
                b"<html><head><title>503 Service Temporarily Unavailable</title></head><body>"
                b"<center><h1>503 Service Temporarily Unavailable</h1></center><hr><center>nginx"
                b"</center></body></html>",
                "text/html",
            )
        elif fault == "html":
            resp = Response(
                200,
                b"<!DOCTYPE html><html><head><title>Sign in to the network"
                b"</title></head><body><form></form></body></html>",
                "text/html",
            )
        else:
            try:
                resp = self.handle(req)
            except Exception as exc:  # a sandbox bug must not hang the client
                resp = Response.json({"error": "sandbox error", "detail": type(exc).__name__}, 500)
            if fault == "truncated" and resp.body:
                resp = Response(
                    resp.status, resp.body[: len(resp.body) // 2], resp.content_type, resp.headers
                )
        self._log(req, resp.status, fault)
        self._send(h, resp)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, resp: Response) -> None:
        try:
            SandboxServer._write(h, resp)
        except (BrokenPipeError, ConnectionResetError):  # the client died or gave up: as a server
            h.close_connection = True  # would, drop it without a traceback

    @staticmethod
    def _write(h: BaseHTTPRequestHandler, resp: Response) -> None:
        # Headers and body leave in two writes; with Nagle's algorithm on, the second waits
        # for the client's delayed ACK (~40 ms), which would dominate every small response.
        h.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        h.send_response(resp.status)
        if resp.content_type and resp.body:
            h.send_header("Content-Type", resp.content_type)
        for k, v in resp.headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(resp.body)))
        h.end_headers()
        if resp.body and h.command != "HEAD":
            h.wfile.write(resp.body)
