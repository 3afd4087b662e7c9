"""Catch one OAuth redirect on 127.0.0.1: the sign-in half a person cannot do by hand.

Some codes live seconds (Bitrix24: 30 s), too short to copy from a browser. `RedirectCatcher`
listens at the redirect URI's port before the sign-in URL is shown, takes the first request
to the redirect URI's path, checks `state`, hands the code to `use_code` at once and answers
the browser with the outcome. The code and tokens are never logged or shown.
"""

from __future__ import annotations

import html
import http.server
import time
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from adapters.errors import AuthError
from adapters.urls import is_loopback


class RedirectCatcher:
    """A one-shot listener for `redirect_uri` (http://127.0.0.1:PORT/path or localhost)."""

    def __init__(self, redirect_uri: str, name: str):
        parts = urlsplit(redirect_uri)
        if parts.scheme != "http" or not parts.hostname or not is_loopback(parts.hostname) or not parts.port:
            raise AuthError(
                f"source '{name}': redirect_uri must be http://127.0.0.1:PORT/... (this "
                f"machine, with a port) for the sign-in to catch the code; it is "
                f"'{redirect_uri}'"
            )
        self.name, self.path = name, parts.path or "/"
        self.outcome: dict | Exception | None = None
        try:
            self.server = http.server.HTTPServer(("127.0.0.1", parts.port), _handler(self))
        except OSError as err:
            raise AuthError(
                f"source '{name}': cannot listen on 127.0.0.1:{parts.port} for the "
                f"sign-in redirect ({err.strerror}); free the port or change "
                f"redirect_uri"
            ) from None

    def wait(self, state: str, timeout_s: float, use_code: Callable[[str], str]) -> str:
        """Serve until the redirect arrives (or `timeout_s` passes); returns use_code's message."""
        self.state, self.use_code = state, use_code
        deadline = time.monotonic() + timeout_s
        try:
            while self.outcome is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AuthError(
                        f"source '{self.name}': no sign-in redirect arrived within "
                        f"{timeout_s:g} s; run `crm-connector auth {self.name}` again "
                        f"and open the URL it prints"
                    )
                self.server.timeout = left
                self.server.handle_request()
        finally:
            self.server.server_close()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome["message"]

    def take(self, query: dict) -> tuple[int, str]:
        """One redirect's query -> (HTTP status, text for the browser); records the outcome."""
        one = {k: v[0] for k, v in query.items()}
        try:
            if one.get("error"):
                raise AuthError(
                    f"source '{self.name}': sign-in refused by the CRM "
                    f"({one['error']}); run `crm-connector auth {self.name}` again"
                )
            if one.get("state") != self.state:
                raise AuthError(
                    f"source '{self.name}': the redirect's state does not match this "
                    f"sign-in; run `crm-connector auth {self.name}` again"
                )
            if not one.get("code"):
                raise AuthError(f"source '{self.name}': the redirect carries no code")
            self.outcome = {"message": self.use_code(one["code"])}
            return 200, "Signed in. You can close this tab and return to the terminal."
        except AuthError as err:
            self.outcome = err
            return 400, f"Sign-in failed: {err}"


def _handler(catcher: RedirectCatcher):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's spelling)
            parts = urlsplit(self.path)
            if parts.path != catcher.path:  # favicon and the like: not ours, keep waiting
                return self._reply(404, "Not found")
            self._reply(*catcher.take(parse_qs(parts.query)))

        def _reply(self, status: int, text: str) -> None:
            body = f"<!doctype html><title>crm-connector</title><p>{html.escape(text)}</p>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # the request line holds the code: log nothing
            pass

    return Handler
