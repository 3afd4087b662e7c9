"""Bitrix24 event handlers of an app: binding them (`event.bind`), removing them
(`event.unbind`), and the offline queue (`event.offline.get` / `event.offline.clear`).

The event methods work only in an application's authorization context (OAuth), never through an
incoming webhook. A webhook-auth source gets its events from an outgoing webhook, which an
admin creates in Bitrix24's UI; it has no offline queue. Each event is bound twice: online (a
POST to the receiver at once, lost if the receiver is down: the portal never resends) and
offline (kept on the portal, one entry per changed object, until read and cleared), so what the
receiver missed while down is still there when it comes back. The offline bindings carry
`auth_connector` (`events.AUTH_CONNECTOR`), which our card writes send too: the portal keeps no
offline entry for our own write-back, which would otherwise come back at every catch-up as
work (thousands of cards after a nightly run) queued ahead of the changes we really missed.
"""

from __future__ import annotations

import logging

from adapters.bitrix24 import events
from adapters.bitrix24.client import MAX_BATCH, Bitrix24Client
from adapters.errors import SourceError
from adapters.hooks import Change

log = logging.getLogger(__name__)

ALREADY = "already binded"  # what a portal answers to binding a handler twice
OFFLINE_LIMIT = 50  # entries one event.offline.get hands out (the documented default)


def _outgoing_webhook_advice(client: Bitrix24Client, url: str) -> SourceError:
    # Errors are redacted, which would leave the handler address as ".../***": name the part
    # to fill in instead, so the address can be typed in from the message and the config.
    secret = getattr(client.cfg, "webhook_secret", None)
    shown = url.replace(secret, "<webhook_secret>") if secret else url
    where = " (the source's webhook_secret in place of <webhook_secret>)" if shown != url else ""
    return SourceError(
        f"Bitrix24 source '{client.name}' uses an incoming webhook, which cannot bind event "
        "handlers (only an app can): create an outgoing webhook in Bitrix24 (Applications > "
        f"Developer resources > Other > Outgoing webhook) pointing at {shown}{where} for the "
        f"events {', '.join(events.BOUND)}, and put the token it shows in the source's "
        "application_token"
    )


def _batch(client: Bitrix24Client, cmds: dict[str, tuple[str, dict]]):
    """Every command, 50 a batch: (results, errors) by key."""
    results, errors, items = {}, {}, list(cmds.items())
    for i in range(0, len(items), MAX_BATCH):
        res = client.batch(dict(items[i : i + MAX_BATCH]))
        results.update(res.results)
        errors.update(res.errors)
    return results, errors


def install(client: Bitrix24Client, url: str) -> str:
    """Bind every followed event online to `url` and offline; binds only what is missing."""
    if client.uses_webhook:
        raise _outgoing_webhook_advice(client, url)
    bound = client.call("event.get").get("result") or []
    have = set()
    for b in bound if isinstance(bound, list) else []:
        if isinstance(b, dict):
            offline = str(b.get("offline") or "0") not in ("0", "")
            handler = "" if offline else str(b.get("handler") or "")
            have.add((str(b.get("event") or "").upper(), handler, offline))
    cmds: dict[str, tuple[str, dict]] = {}
    for n, event in enumerate(events.BOUND):
        if (event, url, False) not in have:
            cmds[f"on{n}"] = ("event.bind", {"event": event, "handler": url, "event_type": "online"})
        if (event, "", True) not in have:
            cmds[f"off{n}"] = (
                "event.bind",
                {"event": event, "event_type": "offline", "auth_connector": events.AUTH_CONNECTOR},
            )
    _, errors = _batch(client, cmds)
    for err in errors.values():
        if ALREADY not in err.description.lower():
            raise client.error("event.bind", err.code, err.description)
    msg = (
        f"Bitrix24 source '{client.name}': {len(events.BOUND)} events bound online to the "
        f"receiver and offline ({len(cmds)} bindings added, "
        f"{2 * len(events.BOUND) - len(cmds)} there already)"
    )
    if not client.cfg.application_token:
        msg += (
            "; set application_token to the app's token (sent to it with ONAPPINSTALL), or "
            "every delivery is refused"
        )
    return msg


def remove(client: Bitrix24Client, url: str) -> str:
    """Unbind the followed events' handlers at `url`, and their offline bindings."""
    if client.uses_webhook:
        raise SourceError(
            f"Bitrix24 source '{client.name}' uses an incoming webhook: its events "
            "come from an outgoing webhook; delete that in Bitrix24 (Applications > "
            "Developer resources)"
        )
    cmds: dict[str, tuple[str, dict]] = {}
    for n, event in enumerate(events.BOUND):
        cmds[f"on{n}"] = ("event.unbind", {"event": event, "handler": url, "event_type": "online"})
        cmds[f"off{n}"] = ("event.unbind", {"event": event, "event_type": "offline"})
    results, errors = _batch(client, cmds)
    for err in errors.values():
        raise client.error("event.unbind", err.code, err.description)
    removed = sum(int(r.get("count") or 0) for r in results.values() if isinstance(r, dict))
    return f"Bitrix24 source '{client.name}': {removed} event bindings removed"


def missed(client: Bitrix24Client) -> tuple[list[Change], str] | None:
    """Up to 50 offline entries, kept on the portal under a process id until `clear`; None
    for a webhook-auth source (no offline events)."""
    if client.uses_webhook:
        return None
    result = client.call("event.offline.get", {"clear": 0, "limit": OFFLINE_LIMIT}).get("result")
    if not isinstance(result, dict):
        result = {}
    changes, unreadable = events.offline_changes(result.get("events") or [])
    if unreadable:
        log.warning(
            "Bitrix24 source '%s': %d offline events named no record; the next sync reads their changes",
            client.name,
            unreadable,
        )
    return changes, str(result.get("process_id") or "")


def clear(client: Bitrix24Client, process_id: str) -> None:
    """Delete the offline entries handed out under `process_id`."""
    if process_id and not client.uses_webhook:
        client.call("event.offline.clear", {"process_id": process_id})
