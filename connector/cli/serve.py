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

import click

from connector.cli.common import connect_fleet, fail, load
from connector.hooks.service import Service

log = logging.getLogger("crm_connector.serve")


@click.command()
@click.option("--threads", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Requests answered side by side.")
@click.pass_context
def serve(ctx: click.Context, threads: int) -> None:
    """Receive amoCRM webhooks and Bitrix24 events; refresh the changed records' KPIs within a minute."""
    from waitress import create_server

    cfg = load(ctx)
    if not any(s.webhook_secret for s in cfg.sources):
        fail(f"{cfg.path}: no source has a webhook_secret: give each source that should send "
             f"changes one (a long random string) in its [[sources]] block", 2)
    fleet = connect_fleet(cfg) if cfg.engine.celery else None
    service = Service(cfg, fleet)
    host, port = cfg.webhooks.host_port
    try:
        server = create_server(service.receiver, host=host, port=port, threads=threads, ident="crm-connector")
    except OSError as err:
        fail(f"{cfg.path}: [webhooks] listen = \"{cfg.webhooks.listen}\": cannot listen: {err.strerror}", 2)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()
        server.close()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.warm()
    threading.Thread(target=_catch_up, args=(service, stop), name="catch-up", daemon=True).start()
    log.info("listening on http://%s:%s/hooks/<source>/<secret> for %s", host, server.effective_port,
             ", ".join(service.sources))
    try:
        server.run()
    except (OSError, ValueError):   # the socket closed by the signal handler
        if not stop.is_set():
            raise
    service.close()
    log.info("stopped after %d refresh(es)", service.refreshes)


def _catch_up(service: Service, stop: threading.Event) -> None:
    service.catch_up(starting=True)
    while not stop.wait(service.cfg.webhooks.catch_up_s):
        service.catch_up(starting=False)
