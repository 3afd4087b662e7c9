"""amoCRM credentials: a long-lived Bearer token, or OAuth 2.0 with rotating refresh tokens.

Refresh tokens are single-use (docs/api-notes.md): two processes refreshing the same pair kill it.
So a refresh holds `TokenStore.locked(source)`, re-reads the store inside the lock (another
thread or process may have refreshed already), and saves the new pair before anyone uses it.
The token request is sent once (`once=True`): resending a refresh token whose reply was lost
only earns "Token has been revoked". A refused or lost refresh is a `ReauthoriseError`, and a
token refused once in this process is not sent again by another thread.
"""

from __future__ import annotations

import threading
import time

import requests

from adapters.errors import AuthError, ReauthoriseError, ReplyLost, reauthorise
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
        self._refused: dict[str, ReauthoriseError] = {}  # refresh token -> why it is dead

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
            raise AuthError(
                f"amoCRM source '{self.source.name}': not authorised yet; open the "
                f"integration's authorisation link and run `crm-connector auth "
                f"{self.source.name} --code CODE`"
            )
        return self._pair["access_token"]

    def on_unauthorized(self, response: requests.Response) -> bool:
        """A 401: refresh once (OAuth) and ask the client to retry; long-lived tokens cannot."""
        if getattr(self._local, "raw", False):
            return False
        if self.source.access_token:
            raise AuthError(
                f"amoCRM source '{self.source.name}': token rejected (401); create a "
                f"new long-lived token and set access_token"
            )
        used = (response.request.headers.get("Authorization") or "").removeprefix("Bearer ")
        with self.tokens.locked(self.source.name):
            stored = self.tokens.load(self.source.name)
            if stored and stored.get("access_token") and stored["access_token"] != used:
                self._pair = stored  # someone else refreshed while we waited
                return True
            if not stored or not stored.get("refresh_token"):
                raise self._reauthorise("no refresh token saved")
            spent = stored["refresh_token"]
            if spent in self._refused:  # another thread's refresh with it already failed
                raise self._refused[spent]
            try:
                self._pair = self._grant(
                    {"grant_type": "refresh_token", "refresh_token": spent}, refresh=True
                )
            except ReauthoriseError as err:
                self._refused[spent] = err
                raise
        return True

    # -- grants ----------------------------------------------------------------------------

    def exchange_code(self, code: str) -> str:
        """Trade an authorisation code for a token pair and save it; returns a safe message."""
        self._check_oauth_keys()
        with self.tokens.locked(self.source.name):
            self._pair = self._grant({"grant_type": "authorization_code", "code": code}, refresh=False)
        return (
            f"amoCRM source '{self.source.name}': authorised; tokens saved to "
            f"{self.tokens.path} (access token valid {self._pair.get('expires_in', '?')} s, "
            f"refreshed automatically)"
        )

    def _grant(self, body: dict, *, refresh: bool) -> dict:
        """POST the token endpoint, persist the new pair, then return it (call under the lock)."""
        self._check_oauth_keys()
        payload = {
            "client_id": self.source.client_id,
            "client_secret": self.source.client_secret,
            "redirect_uri": self.source.redirect_uri,
            **body,
        }
        self._local.raw = True
        try:
            response = self.http.request("POST", self.source.base_url + TOKEN_PATH, json=payload, once=True)
        except ReplyLost as err:
            raise self._lost(err, refresh) from None
        finally:
            self._local.raw = False
        if response.status_code != 200:
            raise self._refusal(response, refresh)
        try:
            data = response.json()
            pair = {
                "access_token": data["access_token"],
                "refresh_token": data["refresh_token"],
                "token_type": data.get("token_type", "Bearer"),
                "expires_in": data.get("expires_in"),
                "expires_at": _expires_at(data.get("expires_in")),
                "saved_at": iso(),
            }
        except (ValueError, KeyError, TypeError):
            why = "the token endpoint answered 200 without a readable token pair"
            if refresh:  # it took the refresh token: the new one is in the reply we cannot read
                raise self._reauthorise(f"{why}, so the new refresh token is lost") from None
            raise AuthError(
                f"amoCRM source '{self.source.name}': {why}; get a fresh code and run "
                f"`crm-connector auth {self.source.name} --code CODE` again"
            ) from None
        self.tokens.save(self.source.name, pair)  # on disk before anyone uses it
        return pair

    def _check_oauth_keys(self) -> None:
        missing = [
            k for k in ("client_id", "client_secret", "redirect_uri") if not getattr(self.source, k, None)
        ]
        if missing:
            raise AuthError(
                f"amoCRM source '{self.source.name}': OAuth needs {', '.join(missing)} in the config"
            )

    def _refusal(self, response: requests.Response, refresh: bool) -> AuthError:
        """What a non-200 from the token endpoint means: our keys, a dead token, or a fault."""
        hint = _hint(response)
        got = f"HTTP {response.status_code}{': ' + hint if hint else ''}"
        if hint in CONFIG_HINTS:
            return AuthError(
                redact(
                    f"amoCRM source '{self.source.name}': the token endpoint "
                    f"refused the integration's keys ({got}); check client_id, "
                    f"client_secret and redirect_uri"
                )
            )
        if response.status_code >= 500:
            return AuthError(
                f"amoCRM source '{self.source.name}': the token endpoint failed "
                f"({got}); the next run tries again"
            )
        if refresh:
            return self._reauthorise(
                f"the refresh token was refused ({got}): it is spent, revoked or expired"
            )
        return AuthError(
            redact(
                f"amoCRM source '{self.source.name}': code exchange rejected ({got}); codes live "
                f"20 minutes and work once: get a fresh code and run `crm-connector auth "
                f"{self.source.name} --code CODE` again"
            )
        )

    def _lost(self, err: ReplyLost, refresh: bool) -> AuthError:
        why = str(err).split(": ")[-1]
        if refresh:  # amoCRM has most likely spent the token already; resending cannot help
            return self._reauthorise(
                f"the token refresh was sent but {why}, so the refresh token is most likely spent"
            )
        return AuthError(
            f"amoCRM source '{self.source.name}': the code exchange was sent but "
            f"{why}; codes work once: get a fresh code and run `crm-connector auth "
            f"{self.source.name} --code CODE` again"
        )

    def _reauthorise(self, why: str) -> ReauthoriseError:
        return reauthorise("amoCRM", self.source.name, redact(why), " --code CODE")


CONFIG_HINTS = ("Client authentication failed", "Redirect URI mismatch")


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
