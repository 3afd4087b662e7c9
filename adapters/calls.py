"""The mirror's call vocabulary, shared by every CRM (docs/mirror.md, `calls`).

`answered`: a conversation took place. Any other outcome (no answer, busy, declined, wrong
number, ...) is `missed` for an incoming call and `failed` for an outgoing one, so
`missed_calls_90d` counts clients' calls nobody picked up, never our own failed dial-outs.
"""

from __future__ import annotations

UNANSWERED = {"in": "missed", "out": "failed"}


def call_status(direction: str, talked: bool) -> str:
    """The mirror status of a call in `direction` ("in" / "out") that did or did not connect."""
    return "answered" if talked else UNANSWERED[direction]
