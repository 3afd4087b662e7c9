"""Failure alerts: one message per failed run, sent through Apprise (an optional extra).

`[notify] urls` are Apprise URLs (tg://..., mailto://..., slack://...). Apprise is imported only
when there is something to send; without it the alert is logged with a hint to install
`crm-connector[notify]`. Tests (and anyone else) pass their own `sender(title, body)`.
A broken alert channel is logged, never allowed to stop the daemon. A token the CRM no longer
accepts is alerted from manual commands too (`urgent_only`): nothing works until someone runs
`crm-connector auth`, and the terminal that saw it may be a cron job's.
"""

from __future__ import annotations

import logging
import socket
from typing import Callable

from adapters.redact import redact
from connector.config.loader import NotifyConfig
from connector.run.sync import Outcome

log = logging.getLogger("crm_connector.notify")

Sender = Callable[[str, str], None]


def apprise_sender(urls: list[str]) -> Sender | None:
    """A sender over Apprise, or None (with a warning) when Apprise is not installed."""
    try:
        import apprise
    except ImportError:
        log.warning(
            "[notify] urls are set but Apprise is not installed: "
            "pip install 'crm-connector[notify]' (alerts are only logged)"
        )
        return None
    app = apprise.Apprise()
    for url in urls:
        if not app.add(url):
            log.warning("[notify] one of the urls was not understood by Apprise")

    def send(title: str, body: str) -> None:
        if not app.notify(title=title, body=body):
            raise RuntimeError("Apprise could not deliver the alert")

    return send


class Notifier:
    """Turns run outcomes into alerts: failures always, successes only with `on_success`."""

    def __init__(self, cfg: NotifyConfig, sender: Sender | None = None, urgent_only: bool = False):
        self.cfg = cfg
        self.urgent_only = urgent_only  # only what needs the admin's hand (re-authorisation)
        self._sender = sender
        self._resolved = sender is not None
        self.host = socket.gethostname()

    def _send_fn(self) -> Sender | None:
        if not self._resolved:
            self._sender = apprise_sender(self.cfg.urls) if self.cfg.urls else None
            self._resolved = True
        return self._sender

    def send(self, title: str, body: str) -> bool:
        """Send one message (secrets masked); False when there is no channel or it failed."""
        title, body = redact(title), redact(body)
        sender = self._send_fn()
        if sender is None:
            return False
        try:
            sender(title, body)
            return True
        except Exception as err:  # an alert channel being down must not take the daemon down
            log.error("could not send an alert: %s", redact(f"{type(err).__name__}: {err}"))
            return False

    def failed(
        self, source: str, stream: str, error: str | None, job: str = "sync", *, reauthorise: bool = False
    ) -> bool:
        """The alert for one failed run of `source`/`stream`; `reauthorise`: the error is a
        token the CRM no longer accepts (as classified where it was caught)."""
        if reauthorise:
            return self.send(
                f"crm-connector: re-authorise source '{source}'",
                f"{job} of source '{source}' stopped on {self.host}: the CRM no "
                f"longer accepts its refresh token.\n{error}",
            )
        if self.urgent_only:
            return False
        title = f"crm-connector: {job} failed: {source}/{stream}"
        body = (
            f"{job} of source '{source}', stream '{stream}' failed on {self.host}:\n"
            f"{error or 'no error message'}"
        )
        return self.send(title, body)

    def succeeded(self, source: str, summary: str, job: str = "sync") -> bool:
        if not self.cfg.on_success or self.urgent_only:
            return False
        return self.send(f"crm-connector: {job} ok: {source}", f"{source} on {self.host}: {summary}")

    def sync_results(self, source: str, results) -> int:
        """One alert per failed stream in `results` (StreamResult list); returns alerts sent.

        Interrupted and skipped streams are not failures: a stop was asked for, or the token
        lacks a scope the user chose not to grant. Streams not run because an earlier one hit
        an auth failure or a block are named in that stream's alert, not sent one by one.
        """
        not_run = [r.stream for r in results if r.outcome is Outcome.NOT_RUN]
        sent = 0
        for r in results:
            if r.outcome is not Outcome.FAILED:
                continue
            error = r.error
            if r.stops_source and not_run:
                error = f"{error}\nnot run because of this: {', '.join(not_run)}"
            sent += self.failed(source, r.stream, error, reauthorise=r.reauthorise)
        return sent


def quiet() -> Notifier:
    """A notifier that sends nothing: manual commands report on the terminal instead."""
    return Notifier(NotifyConfig())


def urgent_only(cfg: NotifyConfig) -> Notifier:
    """For manual commands: the terminal shows failures; only a re-authorisation is alerted."""
    return Notifier(cfg, urgent_only=True)
