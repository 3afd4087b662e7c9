"""Bitrix24 OAuth: the token pair and its refresh, and sign-in in the browser.

`OAuthTokens` supplies the access token and renews it. Refresh tokens are single-use
(docs/api-notes.md): a refresh holds the store's lock, re-reads the pair (another thread or
process may have refreshed), sends the refresh token once (`once=True`: never resent, whatever happens to
the reply) and saves the new pair (fsynced) before it is used. A refused, lost or unreadable
refresh is a `ReauthoriseError`, and a refused token is not sent again from this process.

A token answer names the portal's REST address (`client_endpoint`), which calls go to, and the
access token's lifetime in seconds (`expires_in`), counted from the answer on this machine's
clock (the answer's `expires` is the server's). An access token past its lifetime is renewed
before it is sent, not after a refused call; nothing is renewed on a timer.

A Bitrix24 authorization code lives 30 seconds (docs/api-notes.md), too short to paste,
so `sign_in` listens at the app's redirect URI (`redirect_uri`, on this machine) before it
shows the URL to open, and trades the code the moment the portal redirects the browser.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Callable
from urllib.parse import urlencode, urlsplit

from adapters.errors import AuthError, ReauthoriseError, ReplyLost, reauthorise
from adapters.oauth_redirect import RedirectCatcher
from adapters.redact import redact

log = logging.getLogger(__name__)

CODE_LIFETIME_S = 30
SIGN_IN_TIMEOUT_S = 300.0
EXPIRY_MARGIN_S = 60.0  # an access token this close to its end is renewed before it is sent


PAIR_KEYS = (
    "access_token",
    "refresh_token",
    "expires",
    "expires_in",
    "domain",
    "member_id",
    "user_id",
    "scope",
    "client_endpoint",
    "server_endpoint",
)


def token_refusal(grant: str, code: str) -> str:
    """What a refused token request means, for the admin."""
    if code.lower() != "invalid_grant":
        return f"token request refused ({code}); check client_id and client_secret"
    if grant == "authorization_code":
        return (
            "the authorization code was refused (invalid_grant): it expired (a code lives "
            "30 seconds) or was used already"
        )
    return "the refresh token was refused (invalid_grant): it is spent, revoked or expired"


class OAuthTokens:
    """One portal's OAuth pair: the access token for calls, its refresh, the code exchange."""

    def __init__(self, source, tokens, http):
        self.cfg, self.name, self.tokens, self.http = source, source.name, tokens, http
        self._pair: dict | None = None
        self._lock = threading.Lock()
        self._refused: dict[str, ReauthoriseError] = {}  # refresh token -> why it is dead
        self.clock: Callable[[], float] = time.time
        self._distrusted: str | None = None  # a client_endpoint ignored (warned about once)

    def access_token(self) -> str:
        """The access token to send; one past its lifetime is renewed first."""
        if self._pair is None:
            self._pair = self.tokens.load(self.name) if self.tokens else None
        if not self._pair or not self._pair.get("access_token"):
            raise AuthError(
                f"Bitrix24 source '{self.name}': not authorized yet; run `crm-connector auth {self.name}`"
            )
        token = self._pair["access_token"]
        expires_at = _number(self._pair.get("expires_at"))
        # Only a token that lives well beyond the margin is renewed early: a server giving a few
        # seconds would otherwise get a refresh before every call (it gets the refused call).
        lifetime = _number(self._pair.get("expires_in")) or 0.0
        if (
            expires_at is not None
            and lifetime > 2 * EXPIRY_MARGIN_S
            and self.clock() >= expires_at - EXPIRY_MARGIN_S
        ):
            self.refresh(token)
            token = self._pair["access_token"]
        return token

    def endpoint(self) -> str | None:
        """The REST address the last token answer named (`client_endpoint`), or None: then the
        configured portal's /rest/. Never plain http for an https portal (the token goes there)."""
        url = str((self._pair or {}).get("client_endpoint") or "")
        if not url:
            return None
        scheme = urlsplit(url).scheme
        portal = urlsplit(self.cfg.portal_url or "").scheme
        if scheme not in ("http", "https") or (portal == "https" and scheme != "https"):
            if self._distrusted != url:
                self._distrusted = url
                log.warning(
                    "Bitrix24 source '%s': ignoring the token answer's client_endpoint %r; calling %s/rest/",
                    self.name,
                    url,
                    self.cfg.portal_url,
                )
            return None
        return url if url.endswith("/") else url + "/"

    def refresh(self, used: str) -> None:
        """Swap a dead access token for a new pair, once, whoever asks concurrently."""
        with self._lock, self.tokens.locked(self.name):
            current = self.tokens.load(self.name) or {}
            if current.get("access_token") and current["access_token"] != used:
                self._pair = current  # another thread or process refreshed already
                return
            spent = current.get("refresh_token", "")
            if spent in self._refused:  # refused once already: sending it again cannot help
                raise self._refused[spent]
            try:
                pair = self._request({"grant_type": "refresh_token", "refresh_token": spent})
            except ReauthoriseError as err:
                self._refused[spent] = err
                raise
            self.tokens.save(self.name, pair)  # on disk before first use: refresh tokens rotate
            self._pair = pair

    def exchange_code(self, code: str) -> str:
        """Trade an authorization code for the first token pair and store it."""
        with self.tokens.locked(self.name):
            pair = self._request({"grant_type": "authorization_code", "code": code})
            self.tokens.save(self.name, pair)
        self._pair = pair
        return (
            f"source '{self.name}': authorized for {pair.get('domain') or self.cfg.portal_url}"
            f" (user {pair.get('user_id', '?')}); tokens saved"
        )

    def _request(self, params: dict) -> dict:
        """One GET to the OAuth server, never resent: a refresh token works once."""
        grant = params["grant_type"]
        params = {**params, "client_id": self.cfg.client_id, "client_secret": self.cfg.client_secret}
        try:
            r = self.http.request("GET", self.cfg.oauth_url, params=params, once=True)
        except ReplyLost as err:
            raise self._failure(grant, f"the request was sent but {str(err).split(': ')[-1]}") from None
        try:
            data = r.json()
            if not isinstance(data, dict):
                raise ValueError
        except ValueError:
            raise self._failure(
                grant, f"the answer (HTTP {r.status_code}) was not readable", spent=r.status_code < 500
            ) from None
        if r.status_code != 200 or not data.get("access_token"):
            code = str(data.get("error") or r.status_code)
            if grant == "refresh_token" and code.lower() == "invalid_grant":
                raise reauthorise("Bitrix24", self.name, token_refusal(grant, code))
            raise AuthError(
                redact(
                    f"Bitrix24 source '{self.name}': {token_refusal(grant, code)}; "
                    f"run `crm-connector auth {self.name}` again"
                )
            )
        lifetime = _number(data.get("expires_in"))
        return {
            **{k: data.get(k) for k in PAIR_KEYS},
            # our clock: the server's `expires` may be minutes off it
            "expires_at": self.clock() + lifetime if lifetime is not None else None,
        }

    def _failure(self, grant: str, what: str, spent: bool = True) -> AuthError:
        """A token request without a usable answer. A refresh the server may have taken has
        most likely spent the token; only a 5xx (the server failed) leaves it worth a retry."""
        if grant != "refresh_token":
            return AuthError(
                f"Bitrix24 source '{self.name}': the OAuth server's code exchange "
                f"failed ({what}); codes live 30 seconds and work once: run "
                f"`crm-connector auth {self.name}` again"
            )
        if not spent:
            return AuthError(
                f"Bitrix24 source '{self.name}': the OAuth server failed ({what}); "
                f"the refresh token was not taken, the next run tries again"
            )
        return reauthorise(
            "Bitrix24",
            self.name,
            f"the token refresh failed: {what}, so the refresh token is most likely spent",
        )


def _number(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def authorize_url(portal_url: str, client_id: str, state: str) -> str:
    """https://{portal}/oauth/authorize/?client_id=...&state=... (the documented parameters)."""
    return f"{portal_url}/oauth/authorize/?" + urlencode({"client_id": client_id, "state": state})


def sign_in(client, say: Callable[[str], None], timeout_s: float = SIGN_IN_TIMEOUT_S) -> str:
    """Show the URL to open, catch the redirect, exchange its code; says what it did."""
    cfg = client.cfg
    if client.uses_webhook:
        return f"source '{client.name}' uses an incoming webhook; nothing to authorize"
    if not cfg.redirect_uri:
        raise AuthError(
            f"source '{client.name}': set redirect_uri (the app's handler address, "
            f"e.g. http://127.0.0.1:8765/bitrix24) so `crm-connector auth "
            f"{client.name}` can catch the {CODE_LIFETIME_S}-second code"
        )
    catcher = RedirectCatcher(cfg.redirect_uri, client.name)  # listening before the URL shows
    state = secrets.token_urlsafe(16)
    say(
        f"Open this URL in a browser signed in to the portal (waiting up to {timeout_s:g} s "
        f"for its redirect to {cfg.redirect_uri}):\n{authorize_url(cfg.portal_url, cfg.client_id, state)}"
    )
    return catcher.wait(state, timeout_s, client.exchange_code)
