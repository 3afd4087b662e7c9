"""amoCRM credentials: a long-lived Bearer token, or OAuth 2.0 with rotating refresh tokens.

Refresh tokens are single-use (facts §3.1): two processes refreshing the same pair kill it.
So a refresh holds `TokenStore.locked(source)`, re-reads the store inside the lock (another
thread or process may have refreshed already), and saves the new pair before anyone uses it.
"""

from __future__ import annotations

import threading
import time

import requests

from adapters.errors import AuthError
from adapters.http import HttpClient
from adapters.redact import redact
from adapters.times import from_unix, iso

TOKEN_PATH = "/oauth2/access_token"


class AmoAuth:
    """Supplies the Authorization header and renews it on a 401 (the HttpClient hooks)."""

    def __init__(self, source, tokens, http: HttpClient):
        self.source, self.tokens, self.http = source, tokens, http
        self._pair: dict | None = None
        self._local = threading.local()  # marks the refresh call itself: no refresh inside one

    # -- HttpClient hooks ------------------------------------------------------------------

    def headers(self) -> dict:
        if getattr(self._local, "raw", False):
            return {}
        return {"Authorization": f"Bearer {self.access_token()}"}

    def access_token(self) -> str:
        if self.source.access_token:
            return self.source.access_token
        if self._pair is None:
            self._pair = self.tokens.load(self.source.name)
        if not self._pair or not self._pair.get("access_token"):
            raise AuthError(f"amoCRM source '{self.source.name}': not authorised yet; open the "
                            f"integration's authorisation link and run `crm-connector auth "
                            f"{self.source.name} --code CODE`")
        return self._pair["access_token"]

    def on_unauthorized(self, response: requests.Response) -> bool:
        """A 401: refresh once (OAuth) and ask the client to retry; long-lived tokens cannot."""
        if getattr(self._local, "raw", False):
            return False
        if self.source.access_token:
            raise AuthError(f"amoCRM source '{self.source.name}': token rejected (401); create a "
                            f"new long-lived token and set access_token")
        used = (response.request.headers.get("Authorization") or "").removeprefix("Bearer ")
        with self.tokens.locked(self.source.name):
            stored = self.tokens.load(self.source.name)
            if stored and stored.get("access_token") and stored["access_token"] != used:
                self._pair = stored  # someone else refreshed while we waited
                return True
            if not stored or not stored.get("refresh_token"):
                raise self._reauthorise("no refresh token saved")
            self._pair = self._grant({"grant_type": "refresh_token",
                                      "refresh_token": stored["refresh_token"]}, refresh=True)
        return True

    # -- grants ----------------------------------------------------------------------------

    def exchange_code(self, code: str) -> str:
        """Trade an authorisation code for a token pair and save it; returns a safe message."""
        self._check_oauth_keys()
        with self.tokens.locked(self.source.name):
            self._pair = self._grant({"grant_type": "authorization_code", "code": code},
                                     refresh=False)
        return (f"amoCRM source '{self.source.name}': authorised; tokens saved to "
                f"{self.tokens.path} (access token valid {self._pair.get('expires_in', '?')} s, "
                f"refreshed automatically)")

    def _grant(self, body: dict, *, refresh: bool) -> dict:
        """POST the token endpoint, persist the new pair, then return it (call under the lock)."""
        self._check_oauth_keys()
        payload = {"client_id": self.source.client_id, "client_secret": self.source.client_secret,
                   "redirect_uri": self.source.redirect_uri, **body}
        self._local.raw = True
        try:
            response = self.http.request("POST", self.source.base_url + TOKEN_PATH, json=payload)
        finally:
            self._local.raw = False
        if response.status_code != 200:
            hint = _hint(response)
            if refresh:
                raise self._reauthorise(f"refresh rejected (HTTP {response.status_code}"
                                        f"{': ' + hint if hint else ''})")
            raise AuthError(redact(
                f"amoCRM source '{self.source.name}': code exchange rejected (HTTP "
                f"{response.status_code}{': ' + hint if hint else ''}); codes live 20 minutes and "
                f"work once: get a fresh code and run `crm-connector auth {self.source.name} "
                f"--code CODE` again"))
        try:
            data = response.json()
            pair = {"access_token": data["access_token"], "refresh_token": data["refresh_token"],
                    "token_type": data.get("token_type", "Bearer"),
                    "expires_in": data.get("expires_in"),
                    "expires_at": _expires_at(data.get("expires_in")),
                    "saved_at": iso()}
        except (ValueError, KeyError, TypeError):
            raise AuthError(f"amoCRM source '{self.source.name}': the token endpoint answered "
                            f"without a token pair; try `crm-connector auth` again") from None
        self.tokens.save(self.source.name, pair)  # on disk before anyone uses it
        return pair

    def _check_oauth_keys(self) -> None:
        missing = [k for k in ("client_id", "client_secret", "redirect_uri")
                   if not getattr(self.source, k, None)]
        if missing:
            raise AuthError(f"amoCRM source '{self.source.name}': OAuth needs {', '.join(missing)} "
                            f"in the config")

    def _reauthorise(self, why: str) -> AuthError:
        return AuthError(redact(
            f"amoCRM source '{self.source.name}': {why}; the refresh token is spent or revoked: "
            f"get a fresh authorisation code and run `crm-connector auth {self.source.name} "
            f"--code CODE`"))


def _hint(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    return redact(str(body.get("hint") or body.get("detail") or body.get("title") or ""))[:120]


def _expires_at(expires_in) -> str | None:
    try:
        return from_unix(int(time.time() + int(expires_in)))
    except (TypeError, ValueError):
        return None
