"""Bitrix24 OAuth sign-in in the browser: the authorize URL, and the code caught on 127.0.0.1.

A Bitrix24 authorization code lives 30 seconds (settings/oauth/index.md), too short to paste,
so `sign_in` listens at the app's redirect URI (`redirect_uri`, on this machine) before it
shows the URL to open, and trades the code the moment the portal redirects the browser.
"""

from __future__ import annotations

import secrets
from typing import Callable
from urllib.parse import urlencode

from adapters.errors import AuthError
from adapters.oauth_redirect import RedirectCatcher

CODE_LIFETIME_S = 30
SIGN_IN_TIMEOUT_S = 300.0


def authorize_url(portal_url: str, client_id: str, state: str) -> str:
    """https://{portal}/oauth/authorize/?client_id=...&state=... (the documented parameters)."""
    return f"{portal_url}/oauth/authorize/?" + urlencode({"client_id": client_id, "state": state})


def sign_in(client, say: Callable[[str], None], timeout_s: float = SIGN_IN_TIMEOUT_S) -> str:
    """Show the URL to open, catch the redirect, exchange its code; says what it did."""
    cfg = client.cfg
    if client.uses_webhook:
        return f"source '{client.name}' uses an incoming webhook; nothing to authorize"
    if not cfg.redirect_uri:
        raise AuthError(f"source '{client.name}': set redirect_uri (the app's handler address, "
                        f"e.g. http://127.0.0.1:8765/bitrix24) so `crm-connector auth "
                        f"{client.name}` can catch the {CODE_LIFETIME_S}-second code")
    catcher = RedirectCatcher(cfg.redirect_uri, client.name)  # listening before the URL shows
    state = secrets.token_urlsafe(16)
    say(f"Open this URL in a browser signed in to the portal (waiting up to {timeout_s:g} s "
        f"for its redirect to {cfg.redirect_uri}):\n{authorize_url(cfg.portal_url, cfg.client_id, state)}")
    return catcher.wait(state, timeout_s, client.exchange_code)

