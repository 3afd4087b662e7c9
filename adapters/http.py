"""HTTP plumbing shared by the adapters: session, rate limit, retries, auth refresh.

One `HttpClient` per source. Every call goes through the source's limiter, has a timeout,
is retried with exponential backoff and jitter on 429, 5xx and connection errors (a
`Retry-After` header wins), and is never retried on other 4xx. A 401 gives the adapter's
`on_unauthorized` hook one chance to refresh credentials, then the call is retried once.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

import requests
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt

from adapters.errors import BlockedError, StreamError
from adapters.redact import redact

try:
    from importlib.metadata import version as _version
    VERSION = _version("crm-connector")
except Exception:  # running from a checkout that is not installed
    VERSION = "0.1.0"

USER_AGENT = f"crm-connector/{VERSION} (+https://github.com/crm-connector/crm-connector)"


class RateLimiter:
    """At most `rate` calls in any `per`-second window, across threads.

    A sliding window rather than a token bucket: a bucket lets a burst through on top of the
    steady rate, and amoCRM counts requests per second, so a burst is what earns a 429.
    """

    def __init__(self, rate: float, per: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.limit = max(1, int(rate * per)) if rate * per >= 1 else 1
        self.per = per if rate * per >= 1 else 1.0 / rate
        self.clock, self.sleep = clock, sleep
        self._sent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                while self._sent and now - self._sent[0] >= self.per:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                wait = self.per - (now - self._sent[0]) + 0.002
            self.sleep(wait)


class RetryableResponse(Exception):
    """A 429 or 5xx worth another try; carries the server's Retry-After, if any."""

    def __init__(self, response: requests.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.retry_after = _retry_after(response)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


RETRYABLE = (RetryableResponse, requests.ConnectionError, requests.Timeout,
             requests.exceptions.ChunkedEncodingError)


class HttpClient:
    """The one requests.Session of a source, with its limiter and retry policy."""

    def __init__(self, source: str, *, limiter: RateLimiter | None = None,
                 timeout: tuple[float, float] = (10.0, 60.0), max_attempts: int = 6,
                 max_backoff: float = 60.0, verify: bool | str = True,
                 retry_statuses: Callable[[requests.Response], bool] | None = None):
        self.source = source
        self.limiter = limiter
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.verify = verify
        self.sleep: Callable[[float], None] = time.sleep  # tests swap this out
        self.retry_statuses = retry_statuses or (lambda r: r.status_code == 429 or r.status_code >= 500)
        self.on_unauthorized: Callable[[requests.Response], bool] | None = None
        self.auth_headers: Callable[[], dict] = dict
        self._blocked: str | None = None
        self._count_lock = threading.Lock()
        self.requests = 0

    def block(self, message: str) -> None:
        """Refuse every further request for this source (e.g. amoCRM's 403 account block)."""
        self._blocked = message

    def _wait(self, state) -> float:
        exc = state.outcome.exception()
        # exponential backoff with jitter, so parallel clients do not retry in lockstep
        backoff = min(self.max_backoff, 0.5 * 2 ** (state.attempt_number - 1)) + random.uniform(0, 1)
        if isinstance(exc, RetryableResponse) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_backoff)
        return backoff

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        """Send with limiter, timeout and retries; return the final response (any 2xx-4xx).

        Raises StreamError when retries run out, BlockedError once the source is blocked.
        """
        refreshed = False
        while True:
            response = self._send_with_retries(method, url, **kwargs)
            if (response.status_code == 401 and not refreshed and self.on_unauthorized
                    and self.on_unauthorized(response)):
                refreshed = True
                continue
            return response

    def _send_with_retries(self, method: str, url: str, **kwargs) -> requests.Response:
        retrying = Retrying(retry=retry_if_exception_type(RETRYABLE), wait=self._wait,
                            stop=stop_after_attempt(self.max_attempts), sleep=self.sleep,
                            reraise=False)
        try:
            return retrying(self._send_once, method, url, **kwargs)
        except RetryError as err:
            last = err.last_attempt.exception()
            what = f"{method} {urlsplit(url).path}"
            raise StreamError(redact(
                f"source '{self.source}': {what} failed after {self.max_attempts} attempts: "
                f"{_describe(last)}")) from None

    def _send_once(self, method: str, url: str, **kwargs) -> requests.Response:
        if self._blocked:
            raise BlockedError(self._blocked)
        if self.limiter:
            self.limiter.acquire()
        if self._blocked:
            raise BlockedError(self._blocked)
        headers = {**self.auth_headers(), **kwargs.pop("headers", {})}
        with self._count_lock:
            self.requests += 1
        response = self.session.request(method, url, headers=headers,
                                        timeout=kwargs.pop("timeout", self.timeout), **kwargs)
        if self.retry_statuses(response):
            raise RetryableResponse(response)
        return response

    def close(self) -> None:
        self.session.close()


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, RetryableResponse):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return type(exc).__name__ if exc else "unknown error"
