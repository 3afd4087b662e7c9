"""`crm-connector serve`: receive the CRMs' change notifications and refresh the cards' KPIs.

Runs waitress (a maintained WSGI server) on `[webhooks] listen`. Each source with a
`webhook_secret` gets the URL `<public_url>/hooks/<source>/<webhook_secret>`; register it with
`crm-connector hooks install SOURCE`. SIGTERM or Ctrl-C: stop listening, let the refreshes under
way end, exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import click

from connector.cli.common import connect_fleet, fail, load
from connector.hooks.service import Service

log = logging.getLogger("crm_connector.serve")
QUEUE_WARNING_EVERY_S = 60.0


class QueueWarnings(logging.Filter):
    """waitress warns "Task queue depth is N" for each request that finds every thread busy,
    while it holds the lock its threads take requests under: under a burst of deliveries,
    thousands of log lines a second, each written with that lock held. Lets one through per
    `every_s`, telling how many were held back since and the deepest queue seen."""

    def __init__(self, every_s: float = QUEUE_WARNING_EVERY_S, clock=time.monotonic):
        super().__init__("waitress.queue")
        self.every_s, self.clock = every_s, clock
        self._last: float | None = None
        self.held = self.deepest = 0

    def filter(self, record: logging.LogRecord) -> bool:
        depth = record.args[0] if isinstance(record.args, tuple) and record.args else 0
        self.deepest = max(self.deepest, depth if isinstance(depth, int) else 0)
        now = self.clock()
        if self._last is not None and now - self._last < self.every_s:
            self.held += 1
            return False
        if self._last is not None:
            record.msg = (
                "requests waited for a free thread (--threads): queue depth %d now, "
                f"{self.deepest} at most over the last {now - self._last:.0f} s, "
                f"{self.held + 1} such request(s)"
            )
        self._last, self.held, self.deepest = now, 0, 0
        return True


@click.command()
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Requests answered side by side.",
)
@click.pass_context
def serve(ctx: click.Context, threads: int) -> None:
    """Receive amoCRM webhooks and Bitrix24 events; refresh the changed records' KPIs within a minute."""
    from waitress import create_server

    cfg = load(ctx)
    queue_log = logging.getLogger("waitress.queue")
    if not any(isinstance(f, QueueWarnings) for f in queue_log.filters):
        queue_log.addFilter(QueueWarnings())
    if not any(s.webhook_secret for s in cfg.sources):
        fail(
            f"{cfg.path}: no source has a webhook_secret: give each source that should send "
            f"changes one (a long random string) in its [[sources]] block",
            2,
        )
    fleet = connect_fleet(cfg) if cfg.engine.celery else None
    service = Service(cfg, fleet)
    host, port = cfg.webhooks.host_port
    try:
        server = create_server(service.receiver, host=host, port=port, threads=threads, ident="crm-connector")
    except OSError as err:
        fail(f'{cfg.path}: [webhooks] listen = "{cfg.webhooks.listen}": cannot listen: {err.strerror}', 2)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()
        server.close()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.warm()
    threading.Thread(target=_catch_up, args=(service, stop), name="catch-up", daemon=True).start()
    log.info(
        "listening on http://%s:%s/hooks/<source>/<secret> for %s",
        host,
        server.effective_port,
        ", ".join(service.sources),
    )
    try:
        server.run()
    except (OSError, ValueError):  # the socket closed by the signal handler
        if not stop.is_set():
            raise
    service.close()
    log.info("stopped after %d refresh(es)", service.refreshes)


def _catch_up(service: Service, stop: threading.Event) -> None:
    service.catch_up(starting=True)
    while not stop.wait(service.cfg.webhooks.catch_up_s):
        service.catch_up(starting=False)
