"""What a CRM's change notifications (amoCRM webhooks, Bitrix24 event handlers) become.

A delivery is never trusted: the adapter checks that it comes from the source's own account
(`HookRefused` when not) and turns it into `Change`s, which only name what to read back from
the API by id. Parsing is pure (no HTTP); reading back is `Adapter.read_changes`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Change:
    """One record the CRM says changed. table: the mirror table it lives in ("deals", "leads",
    "contacts", "companies", "tasks", "activities", "calls"); deleted: the CRM said it was
    deleted (still checked by reading it back)."""

    table: str
    id: int
    deleted: bool = False


class HookRefused(Exception):
    """A delivery that is not a genuine one for this source (wrong account or token, a shape
    no CRM sends). The message says why in one line and holds no secret."""
