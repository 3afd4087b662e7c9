"""A local receiver for CRM event deliveries in tests: records each POST's form pairs.

    with Receiver() as rx:
        ...                      # point the CRM's handler at rx.url
        pairs = rx.wait(1)[0]    # [(key, value), ...] of the first delivery

`status` is what it answers (200 by default), `hold_s` how long it takes to answer, `path`
the path of `url`. What `got` keeps of each POST is `record`'s (here its form pairs;
`tests/e2e/hook_receiver.py` keeps the path and content type too).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl


class Receiver:
    def __init__(self, status: int = 200, hold_s: float = 0.0, path: str = "/b24/events"):
        self.status, self.hold_s = status, hold_s
        self.got: list = []
        self._cond = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode()
                if owner.hold_s:
                    time.sleep(owner.hold_s)
                entry = owner.record(
                    self.path, self.headers.get("Content-Type", ""), parse_qsl(body, keep_blank_values=True)
                )
                with owner._cond:
                    owner.got.append(entry)
                    owner._cond.notify_all()
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{path}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def record(self, path: str, content_type: str, pairs: list[tuple[str, str]]):
        """What `got` keeps of one POST."""
        return pairs

    def wait(self, n: int, timeout: float = 10.0) -> list:
        """The first `n` deliveries, waiting for them up to `timeout` seconds."""
        end = time.monotonic() + timeout
        with self._cond:
            while len(self.got) < n:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} deliveries, got {len(self.got)}")
                self._cond.wait(left)
            return list(self.got[:n])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
