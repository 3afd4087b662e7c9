"""`crm-connector serve`: the receiver, the debouncer and the refreshes, on either engine.

- local engine: refreshes run in this process (`run.refresh`), one at a time per portal, with
  the portal's refresh share of its limits, held by one adapter per source for as long as
  `serve` runs (an adapter per refresh would start each with the whole share unused);
- celery engine: each debounced batch is queued on the portal's queue (`fleet`), where a
  worker refreshes it with the refresh share of the limits in Redis; the portal's next batch
  is queued once that task has finished, so its refreshes never run side by side either.

Catching up: where the CRM queues the events a receiver missed (Bitrix24 offline events), they
are fetched when `serve` starts and every `[webhooks] catch_up_s`, refreshed, then cleared, a
page at a time until the queue is empty.
Where it does not (amoCRM), `serve` starts an incremental sync with KPIs of each such source
when it starts, since it cannot know what it missed while it was down.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from adapters.hooks import Change
from connector.config.loader import Config, SourceConfig
from connector.hooks.debounce import Debouncer
from connector.hooks.receiver import Receiver
from connector.run import runtime
from connector.run.jobs import INCREMENTAL
from connector.run.refresh import refresh_source
from connector.run.scheduler import Runner

log = logging.getLogger("crm_connector.hooks")


def hook_url(cfg: Config, source: SourceConfig) -> str:
    """The URL a CRM posts `source`'s changes to (holds the secret: never log it)."""
    base = (cfg.webhooks.public_url or f"http://{cfg.webhooks.listen}").rstrip("/")
    return f"{base}/hooks/{source.name}/{source.webhook_secret}"


MAX_PAGES = 100  # pages of missed changes one catch-up takes from a source (Bitrix24: 50 each)


def drain(name: str, adapter, flush: Callable[[str, list[Change]], None]) -> int | None:
    """Take `name`'s missed changes from its CRM's queue page after page, each page refreshed
    (`flush`) and then cleared, until a page brings none (or MAX_PAGES): one page per catch-up
    would leave an outage's changes waiting [webhooks] catch_up_s per 50. Returns how many
    changes came; None for a CRM that keeps no such queue."""
    total = 0
    for _ in range(MAX_PAGES):
        missed = adapter.missed_changes()
        if missed is None:
            return None
        changes, marker = missed
        if changes:
            log.info("source '%s': %d change(s) kept while the receiver was down", name, len(changes))
            flush(name, changes)
            total += len(changes)
        adapter.clear_missed(marker)
        if not changes:
            break
    return total


class Service:
    """sources: those with a `webhook_secret`. `fleet`: the celery engine's `Fleet`, or None."""

    def __init__(self, cfg: Config, fleet=None, refresh: Callable | None = None):
        self.cfg, self.fleet = cfg, fleet
        self.sources = {s.name: s for s in cfg.sources if s.webhook_secret}
        self._refresh = refresh or refresh_source
        # One adapter per source for everything serve asks its CRM (checking deliveries,
        # catching up, refreshing): its limiters hold the refresh share across refreshes. On the
        # celery engine they take that share in Redis, with the workers' refreshes: a share
        # kept in this process would spend it twice over.
        limits = fleet.limits if fleet is not None else None
        self._adapters = {
            name: runtime.make_adapter(cfg.scoped(name), s, limits=limits, role=runtime.REFRESH)
            for name, s in self.sources.items()
        }
        # The catch-up thread flushes too: a source's refreshes still run one at a time.
        self._flushing = {name: threading.Lock() for name in self.sources}
        self._closing = threading.Event()
        # celery engine: a flush thread only waits for its source's worker, so one per source
        # (up to 64) keeps a slow portal from holding up the others
        workers = max(4, min(len(self.sources), 64)) if fleet is not None else 4
        self.debouncer = Debouncer(self.flush, cfg.webhooks.debounce_s, workers=workers)
        self.receiver = Receiver(
            {name: (s.webhook_secret, self._adapters[name].parse_hook) for name, s in self.sources.items()},
            self.debouncer.add,
        )
        self.refreshes = 0

    def flush(self, source: str, changes: list[Change]) -> None:
        """One debounced batch: refreshed here (local) or by a worker (celery). Either way it
        returns once the refresh has ended, so the debouncer never starts a portal's next
        refresh beside it (the next batch gathers meanwhile): two refreshes of one portal side
        by side could save an older read of a record over a newer one, and would split the
        portal's refresh share of its limits into many small batches."""
        with self._flushing[source]:
            if self.fleet is not None:
                task_id = self.fleet.enqueue_refresh(self.sources[source], changes)
                wait_s = 2 * self.cfg.engine.visibility_timeout_s  # a lost worker's task runs again after it
                if not self.fleet.await_task(task_id, wait_s, self._closing) and not self._closing.is_set():
                    log.warning(
                        "source '%s': refresh task %s not finished after %g s; the next batch goes ahead",
                        source,
                        task_id,
                        wait_s,
                    )
            else:
                self._refresh(self.cfg, self.sources[source], changes, adapter=self._adapters[source])
            self.refreshes += 1

    def catch_up(self, starting: bool) -> None:
        """Refresh what each source's CRM kept while we were not listening (see the module doc)."""
        for name, adapter in self._adapters.items():
            try:
                if drain(name, adapter, self.flush) is None and starting:
                    self._sync(self.sources[name])
            except Exception as err:  # one portal's trouble must not stop the receiver
                log.warning("source '%s': catching up failed: %s", name, err)

    def _sync(self, source: SourceConfig) -> None:
        if self.fleet is not None:
            self.fleet.enqueue(source, INCREMENTAL, True)
            return
        threading.Thread(
            target=Runner(self.cfg).run,
            args=(source.name, INCREMENTAL, True),
            name=f"catch-up-{source.name}",
            daemon=True,
        ).start()

    def warm(self) -> None:
        """What checking a delivery needs from each CRM, asked once before the first one comes
        (amoCRM: the account's id), so the receiver answers at once."""
        for name, adapter in self._adapters.items():
            warm = getattr(adapter, "account", None)
            if warm is not None:
                try:
                    warm()
                except Exception as err:
                    log.warning("source '%s': cannot read its account yet: %s", name, err)

    def close(self) -> None:
        self._closing.set()  # stop waiting for workers' refreshes: they go on without us
        self.debouncer.close()
        for adapter in self._adapters.values():
            adapter.close()
