"""A local HTTP receiver for the sandboxes' change notifications (webhooks, event handlers).

    with Receiver() as rx:
        ... register rx.url("/hooks/secret") with a sandbox, change its dataset ...
        deliveries = rx.wait_for(1)
        deliveries[0].pairs   # the form body as (key, value) pairs, in order

Every POST is recorded (path, content type, pairs) and answered `status` (200 by default).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl


@dataclass
class Delivery:
    path: str
    content_type: str
    pairs: list[tuple[str, str]]

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.pairs if k == key), None)


class Receiver:
    def __init__(self, status: int = 200):
        self.status = status
        self.got: list[Delivery] = []
        self._cond = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode()
                with owner._cond:
                    owner.got.append(
                        Delivery(
                            self.path,
                            self.headers.get("Content-Type", ""),
                            parse_qsl(body, keep_blank_values=True),
                        )
                    )
                    owner._cond.notify_all()
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str = "/hooks/amocrm/secret-token-1234") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Delivery]:
        """The first `n` deliveries, waiting up to `timeout` seconds for them."""
        end = time.monotonic() + timeout
        with self._cond:
            while len(self.got) < n and time.monotonic() < end:
                self._cond.wait(end - time.monotonic())
            assert len(self.got) >= n, f"{len(self.got)} deliveries, expected {n}"
            return list(self.got[:n])

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
