"""HTTP plumbing shared by the adapters: session, rate limit, retries, auth refresh.

One `HttpClient` per source. Every call goes through the source's limiter, has a timeout,
is retried with exponential backoff and jitter on 429, 5xx, a 2xx whose body is not the JSON
asked for (`expect_json`), resets and read timeouts (a `Retry-After` header wins), and is never
retried on other 4xx. A 401 gives the adapter's `on_unauthorized` hook one chance to refresh
credentials, then the call is retried once.

A connection that cannot be made at all (DNS, refused, connect timeout, TLS) is not a blip to
ride out: after at most one quick retry it raises `UnreachableError` naming the host and the
cause, and the source's remaining streams are not attempted. A call that must never be sent
twice (`once=True`: a single-use refresh token) is retried only when it provably never left.

Requests are counted per source (`HttpClient.requests`) and, for work that runs beside other
work of the same source (streams side by side), per piece of work: `tallied()` counts the
requests sent in its context, by its own thread and by the workers of a `ContextPool` it
starts.

A stop (`HttpClient.watch(event)`: SIGTERM) is obeyed at once wherever a call waits: in the
limiter, between retries, before it is sent. The call raises `Interrupted`; a request
already on the wire is not cut off (its timeout bounds it).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import errno
import random
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator
from urllib.parse import urlsplit

import requests
from tenacity import Retrying, stop_after_attempt

from adapters.errors import BlockedError, Interrupted, ReplyLost, StreamError, UnreachableError
from adapters.redact import redact

try:
    from importlib.metadata import version as _version

    VERSION = _version("crm-connector")
except Exception:  # running from a checkout that is not installed
    VERSION = "0.1.0"

USER_AGENT = f"crm-connector/{VERSION} (+https://github.com/crm-connector/crm-connector)"
CONNECT_TIMEOUT_S = 5.0  # a reachable host answers in well under a second; `timeout_s` is for reads
NET_ADVICE = "check the source's URL, the network and that the service is up"
TLS_ADVICE = (
    "check the source's URL and the server's certificate; one from a private CA must "
    "be trusted here (REQUESTS_CA_BUNDLE=/path/to/ca.pem)"
)
FIRST_BACKOFF_S = 0.25  # a lone 502 or cut body is usually gone at once: retry soon, then back off


class Tally:
    """Requests sent for one piece of work (a stream), whichever threads sent them."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.count += 1


_TALLY: contextvars.ContextVar[Tally | None] = contextvars.ContextVar("crm_request_tally", default=None)


@contextlib.contextmanager
def tallied() -> Iterator[Tally]:
    """Count the requests sent from here on in this context (see `ContextPool`)."""
    tally = Tally()
    token = _TALLY.set(tally)
    try:
        yield tally
    finally:
        _TALLY.reset(token)


class ContextPool(ThreadPoolExecutor):
    """A thread pool whose tasks run in a copy of the submitter's context: the requests its
    workers send count towards the submitter's `tallied()`."""

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


class RateLimiter:
    """At most `rate` calls in any `per`-second window, across threads.

    A sliding window rather than a token bucket: a bucket lets a burst through on top of the
    steady rate, and amoCRM counts requests per second, so a burst is what earns a 429.
    """

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
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


def interruptible(
    stop: threading.Event | None, sleep: Callable[[float], None] = time.sleep
) -> Callable[[float], None]:
    """A sleep that ends early, raising Interrupted, once `stop` is set (no `stop`: `sleep`)."""
    if stop is None:
        return sleep

    def pause(seconds: float) -> None:
        if stop.is_set() or stop.wait(max(0.0, seconds)):
            raise Interrupted("stopped by signal")

    return pause


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


class BadBody(Exception):
    """A 2xx whose body is not the JSON the API promises (cut short, a proxy's HTML page)."""

    retry_after = None

    def __init__(self, response: requests.Response):
        kind = (response.headers.get("Content-Type") or "no content type").split(";")[0]
        super().__init__(
            f"HTTP {response.status_code} with a body that is not JSON "
            f"({len(response.content)} bytes, {kind})"
        )
        self.response = response


RETRYABLE = (
    RetryableResponse,
    BadBody,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def _causes(exc: BaseException):
    """The exception and everything it wraps (requests -> urllib3 -> socket)."""
    seen, todo = set(), [exc] if exc is not None else []
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        wrapped = [*getattr(e, "args", ()), getattr(e, "reason", None), e.__cause__, e.__context__]
        todo += [w for w in wrapped if isinstance(w, BaseException)]  # ssl's `reason` is text


def connect_failure(
    exc: BaseException | None, connect_s: float = CONNECT_TIMEOUT_S
) -> tuple[str, bool] | None:
    """(cause, worth one retry) when no connection could be made, so nothing was sent;
    None when the request may have reached the server (a reset or timeout mid-reply)."""
    if isinstance(exc, requests.exceptions.SSLError):
        why = next(
            (
                e.verify_message or e.reason
                for e in _causes(exc)
                if isinstance(e, ssl.SSLCertVerificationError)
            ),
            None,
        )
        return f"TLS handshake failed{f' ({why})' if why else ''}", False
    if isinstance(exc, requests.ConnectTimeout):
        return f"no answer to connect within {connect_s:g} s", False
    if not isinstance(exc, requests.ConnectionError):
        return None
    for e in _causes(exc):
        if isinstance(e, socket.gaierror):
            return f"DNS lookup failed ({e.strerror or 'unknown host'})", True
        if isinstance(e, ConnectionRefusedError):
            return "connection refused", True
        if isinstance(e, OSError) and e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "host unreachable", True
    return None


class HttpClient:
    """The one requests.Session of a source, with its limiter and retry policy."""

    def __init__(
        self,
        source: str,
        *,
        limiter: RateLimiter | None = None,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, 60.0),
        max_attempts: int = 6,
        max_backoff: float = 60.0,
        verify: bool | str = True,
        retry_statuses: Callable[[requests.Response], bool] | None = None,
    ):
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
        self.stop: threading.Event | None = None

    def watch(self, stop: threading.Event | None) -> None:
        """Obey `stop` from now on: waits in the limiter and between retries end early, and
        no call is sent once it is set (each raises Interrupted). None: obey none again."""
        self.stop = stop
        if self.limiter is not None and hasattr(self.limiter, "sleep"):
            self.limiter.sleep = interruptible(stop)

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Interrupted("stopped by signal")

    def _pause(self, seconds: float) -> None:
        """Tenacity's sleep between attempts: the swappable `sleep`, or a stoppable wait."""
        if self.stop is None:
            self.sleep(seconds)
        else:
            interruptible(self.stop)(seconds)

    def block(self, message: str) -> None:
        """Refuse every further request for this source (e.g. amoCRM's 403 account block)."""
        self._blocked = message

    def _wait(self, state) -> float:
        exc = state.outcome.exception()
        if isinstance(exc, RetryableResponse) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_backoff)
        if connect_failure(exc):
            return FIRST_BACKOFF_S  # a restarting server or a resolver hiccup: one quick look
        # exponential backoff, jittered so parallel clients do not retry in lockstep
        backoff = min(self.max_backoff, FIRST_BACKOFF_S * 2 ** (state.attempt_number - 1))
        return backoff * random.uniform(0.5, 1.5)

    def request(
        self,
        method: str,
        url: str,
        *,
        expect_json: bool = False,
        once: bool = False,
        retry: Callable[[BaseException], bool] | None = None,
        **kwargs,
    ) -> requests.Response:
        """Send with limiter, timeout and retries; return the final response (any 2xx-4xx).

        expect_json: a 2xx with a body must be JSON (else retried like a 502); the parsed body
        is left on `response.parsed`. once: never send twice (a single-use token): only a
        connection that was never made is retried, and a 5xx or unreadable reply is returned.
        retry: the caller's say on a transient fault (False: not sent again the same way; the
        call then fails as when retries run out). A connection never made is retried anyway.
        Raises StreamError when retries run out, ReplyLost when a `once` request's reply is
        lost, UnreachableError when the host cannot be reached, BlockedError once blocked.
        """
        refreshed = False
        while True:
            response = self._send_with_retries(method, url, expect_json, once, retry, **kwargs)
            if (
                response.status_code == 401
                and not refreshed
                and self.on_unauthorized
                and self.on_unauthorized(response)
            ):
                refreshed = True
                continue
            return response

    def _retry(self, once: bool, veto: Callable[[BaseException], bool] | None = None) -> Callable:
        """Tenacity's retry test: transient faults (unless `veto` says no), but a dead host at
        most once more."""

        def retry(state) -> bool:
            exc = state.outcome.exception()
            down = connect_failure(exc)
            if down:
                return down[1] and state.attempt_number < 2
            if not isinstance(exc, RETRYABLE) or once:
                return False
            return veto is None or veto(exc)

        return retry

    def _send_with_retries(
        self, method: str, url: str, expect_json: bool, once: bool, veto=None, **kwargs
    ) -> requests.Response:
        retrying = Retrying(
            retry=self._retry(once, veto),
            wait=self._wait,
            reraise=True,
            stop=stop_after_attempt(self.max_attempts),
            sleep=self._pause,
        )
        try:
            return retrying(self._send_once, method, url, expect_json, **kwargs)
        except (RetryableResponse, BadBody) as last:
            if once:
                return last.response
            raise self._gave_up(method, url, last, retrying) from None
        except RETRYABLE as last:
            down = connect_failure(last, _connect_s(self.timeout))
            if down:
                raise self._unreachable(url, down[0], retrying) from None
            if once:
                raise ReplyLost(
                    redact(
                        f"source '{self.source}': {method} {urlsplit(url).path}: "
                        f"the reply was lost ({_describe(last)})"
                    )
                ) from None
            raise self._gave_up(method, url, last, retrying) from None

    def _gave_up(self, method: str, url: str, last: BaseException, retrying) -> StreamError:
        attempts = retrying.statistics.get("attempt_number", self.max_attempts)
        return StreamError(
            redact(
                f"source '{self.source}': {method} {urlsplit(url).path} failed after {attempts} "
                f"attempts: {_describe(last)}"
            )
        )

    def _unreachable(self, url: str, cause: str, retrying) -> UnreachableError:
        parts = urlsplit(url)
        attempts = retrying.statistics.get("attempt_number", 1)
        return UnreachableError(
            redact(
                f"source '{self.source}': cannot reach {parts.hostname}"
                f"{f' port {parts.port}' if parts.port else ''}: {cause} "
                f"({attempts} attempt{'s' if attempts > 1 else ''}); "
                f"{TLS_ADVICE if cause.startswith('TLS') else NET_ADVICE}"
            )
        )

    def _send_once(self, method: str, url: str, expect_json: bool, **kwargs) -> requests.Response:
        if self._blocked:
            raise BlockedError(self._blocked)
        self._check_stop()
        if self.limiter:
            self.limiter.acquire()
        self._check_stop()
        if self._blocked:
            raise BlockedError(self._blocked)
        headers = {**self.auth_headers(), **kwargs.pop("headers", {})}
        with self._count_lock:
            self.requests += 1
        tally = _TALLY.get()
        if tally is not None:
            tally.add()
        response = self.session.request(
            method, url, headers=headers, timeout=kwargs.pop("timeout", self.timeout), **kwargs
        )
        if self.retry_statuses(response):
            raise RetryableResponse(response)
        if expect_json:
            response.parsed = _json_body(response)
        return response

    def close(self) -> None:
        self.session.close()


def _connect_s(timeout) -> float:
    return timeout[0] if isinstance(timeout, tuple) else timeout


def _json_body(response: requests.Response):
    """The parsed body of a 2xx (None when empty); raises BadBody when it is not JSON.
    Other statuses are the caller's to read: an error page is not a transient fault."""
    if not 200 <= response.status_code < 300 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise BadBody(response) from None


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, (RetryableResponse, BadBody)):
        return str(exc)
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the reply was cut off"
    return type(exc).__name__ if exc else "unknown error"
