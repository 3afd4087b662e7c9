"""OAuth tokens and the per-method operating-time budget of the Bitrix24 sandbox."""

from __future__ import annotations

import collections
import math
import secrets
import threading
import time
from urllib.parse import urlencode

from .query import ApiError

MEMBER_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"  # the portal's id in OAuth replies


class OperatingBudget:
    """Seconds of server time each method used in the last `window_s`, kept as Bitrix24 does
    in ten baskets (one minute each on a real portal): a basket drops out whole, and
    `operating_reset_at` is when the oldest one does."""

    BASKETS = 10

    def __init__(self, budget_s: float, window_s: float, clock=time.time):
        self.budget_s, self.window_s, self.clock = budget_s, window_s, clock
        self.basket_s = window_s / self.BASKETS
        self._spent: dict[str, collections.OrderedDict] = collections.defaultdict(collections.OrderedDict)
        self._lock = threading.Lock()

    def _trim(self, method: str, now: float) -> collections.OrderedDict:
        baskets = self._spent[method]
        current = int(now // self.basket_s)
        while baskets and next(iter(baskets)) <= current - self.BASKETS:
            baskets.popitem(last=False)
        return baskets

    def used(self, method: str) -> tuple[float, int]:
        """(seconds used in the window, Unix time the oldest basket drops out)."""
        with self._lock:
            now = self.clock()
            baskets = self._trim(method, now)
            if not baskets:
                return 0.0, int(now + self.window_s)
            oldest = next(iter(baskets))
            return max(0.0, sum(baskets.values())), math.ceil((oldest + self.BASKETS) * self.basket_s)

    def blocked(self, method: str) -> bool:
        return self.used(method)[0] >= self.budget_s

    def charge(self, method: str, seconds: float) -> None:
        with self._lock:
            now = self.clock()
            baskets = self._trim(method, now)
            key = int(now // self.basket_s)
            baskets[key] = baskets.get(key, 0.0) + seconds


class OAuthServer:
    """Authorization codes, access tokens and single-use (rotating) refresh tokens."""

    CODE_TTL_S = 30.0  # Bitrix24 OAuth: an authorization code lives 30 seconds

    def __init__(self, client_id: str, client_secret: str, access_ttl_s: int = 3600):
        self.client_id, self.client_secret = client_id, client_secret
        self.access_ttl_s = access_ttl_s
        self.redirect_uri: str | None = None  # the app's registered handler (test knob)
        self.skew_s = 0.0  # clock knob: advance() moves it forward
        self._codes: dict[str, float] = {}
        self._access: dict[str, float] = {}  # token -> expires (Unix)
        self._refresh: dict[str, str] = {}  # refresh token -> its access token
        self._lock = threading.Lock()
        self.refreshes = 0

    def now(self) -> float:
        return time.time() + self.skew_s

    def advance(self, seconds: float) -> None:
        """Clock knob: the server's time jumps `seconds` ahead (codes and tokens age, no sleep)."""
        self.skew_s += seconds

    def issue_code(self, ttl_s: float | None = None) -> str:
        code = secrets.token_hex(16)
        with self._lock:
            self._codes[code] = self.now() + (self.CODE_TTL_S if ttl_s is None else ttl_s)
        return code

    def authorize(self, params: dict) -> str:
        """GET /oauth/authorize/?client_id=...&state=...: the user (signed in, consenting) is
        sent to the app's registered redirect URI with `code`, `state`, `domain`, `member_id`,
        `scope`, `server_domain`. Returns that Location; raises ApiError for a bad request."""
        if params.get("client_id") != self.client_id:
            raise ApiError("invalid_client", "Unknown client_id", 400)
        if not self.redirect_uri:
            raise ApiError("invalid_request", "The application has no redirect URI", 400)
        asked = params.get("redirect_uri")
        if asked is not None and asked != self.redirect_uri:
            raise ApiError("invalid_request", "redirect_uri does not match the application's", 400)
        query = {
            "code": self.issue_code(),
            "domain": params["_domain"],
            "member_id": MEMBER_ID,
            "scope": params["_scope"],
            "server_domain": "oauth.bitrix.info",
        }
        if params.get("state") is not None:
            query["state"] = params["state"]
        sep = "&" if "?" in self.redirect_uri else "?"
        return self.redirect_uri + sep + urlencode(query)

    def token(self, params: dict) -> dict:
        """The /oauth/token/ endpoint; raises ApiError (invalid_client / invalid_grant)."""
        if params.get("client_id") != self.client_id or params.get("client_secret") != self.client_secret:
            raise ApiError("invalid_client", "invalid client credentials", 401)
        grant = params.get("grant_type")
        with self._lock:
            if grant == "authorization_code":
                expires = self._codes.pop(str(params.get("code")), None)
                if expires is None or expires < self.now():
                    raise ApiError("invalid_grant", "Invalid authorization code", 400)
            elif grant == "refresh_token":
                old = self._refresh.pop(str(params.get("refresh_token")), None)
                if old is None:  # unknown, or already used: refresh tokens are single-use
                    raise ApiError("invalid_grant", "Invalid refresh token", 400)
                self._access.pop(old, None)  # the jointly issued access token dies too
                self.refreshes += 1
            else:
                raise ApiError("invalid_request", "Unsupported grant_type", 400)
            access, refresh = secrets.token_hex(24), secrets.token_hex(24)
            expires = int(self.now()) + self.access_ttl_s
            self._access[access] = expires
            self._refresh[refresh] = access
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires": expires,
            "expires_in": self.access_ttl_s,
        }

    def check(self, token) -> None:
        """Raise the REST error a portal gives for a bad or expired access token."""
        with self._lock:
            expires = self._access.get(str(token)) if token else None
        if not token:
            raise ApiError("NO_AUTH_FOUND", "Wrong authorization data", 401)
        if expires is None:
            raise ApiError("invalid_token", "The access token provided is invalid.", 401)
        if expires <= self.now():
            raise ApiError("expired_token", "The access token provided has expired.", 401)

    def expire_all(self) -> None:
        """Test knob: every access token issued so far is now expired (refresh still works)."""
        with self._lock:
            for t in self._access:
                self._access[t] = 0
