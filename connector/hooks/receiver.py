"""The receiver's WSGI app: `POST /hooks/<source>/<webhook_secret>`, answered at once.

An unknown source is 404 and a wrong secret 403 (compared in constant time), both before the
body is read, and logged in one line that never holds the secret. A body the source's CRM
would not send, or one from another account, is 403 (`HookRefused`). A genuine delivery is
200 once its changes are handed to `accept(source, changes)`; the reading back happens later.
`GET /health` answers 200 for load balancers and tests.
"""

from __future__ import annotations

import hmac
import logging
from typing import Callable
from urllib.parse import parse_qsl

from adapters.hooks import Change, HookRefused

log = logging.getLogger("crm_connector.hooks")
MAX_BODY = 1 << 20  # a delivery of a few hundred records is a few dozen KiB


class Receiver:
    """sources: name -> (webhook_secret, parse(pairs) -> list[Change])."""

    def __init__(
        self,
        sources: dict[str, tuple[str, Callable[[list], list[Change]]]],
        accept: Callable[[str, list[Change]], None],
    ):
        self.sources, self.accept = sources, accept
        self.counts = {"accepted": 0, "refused": 0, "unknown": 0}

    def __call__(self, environ, start_response):
        status, body = self.handle(environ)
        start_response(
            status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        )
        return [body]

    def handle(self, environ) -> tuple[str, bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/health":
            return "200 OK", b"ok\n"
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "hooks":
            return self._no("404 Not Found", "unknown", f"no such path ({len(parts)} part(s))")
        name, secret = parts[1], parts[2]
        known = self.sources.get(name)
        if known is None:
            return self._no("404 Not Found", "unknown", f"no source named '{name[:60]}'")
        if not hmac.compare_digest(secret.encode(), known[0].encode()):
            return self._no("403 Forbidden", "refused", f"source '{name}': wrong secret in the URL")
        if environ.get("REQUEST_METHOD") != "POST":
            return "405 Method Not Allowed", b"POST only\n"
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = 0
        if size > MAX_BODY:
            return self._no("413 Payload Too Large", "refused", f"source '{name}': {size} bytes")
        raw = environ["wsgi.input"].read(size).decode("utf-8", errors="replace")
        try:
            changes = known[1](parse_qsl(raw, keep_blank_values=True))
        except HookRefused as err:
            return self._no("403 Forbidden", "refused", f"source '{name}': {err}")
        self.accept(name, changes)
        self.counts["accepted"] += 1
        return "200 OK", b"ok\n"

    def _no(self, status: str, count: str, why: str) -> tuple[str, bytes]:
        self.counts[count] += 1
        log.warning("webhook refused (%s): %s", status.split()[0], why)
        return status, status.encode() + b"\n"
