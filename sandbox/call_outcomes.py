"""What happened on a sandbox call, in neutral words, and the status the mirror should show.

A dataset call has a `direction` ("in" / "out") and an `outcome`; each server renders the
outcome in its own API's codes (amoCRM `call_status`, Bitrix24 `CALL_FAILED_CODE`). `status`
is the vocabulary of the connector's mirror (a call's status column): `answered` when talked,
else `missed` for an incoming call and `failed` for an outgoing one. Rows added without an
outcome get one from their status.
"""

from __future__ import annotations

OUTCOMES = ("talked", "no_answer", "busy", "declined", "wrong_number")
_FROM_STATUS = {"answered": "talked", "missed": "no_answer", "failed": "busy"}


def status_of(direction: str, outcome: str) -> str:
    """The mirror status of a call in `direction` with `outcome`."""
    if outcome == "talked":
        return "answered"
    return "missed" if direction == "in" else "failed"


def outcome_of(call: dict) -> str:
    """The call's outcome; a row made with only a status gets the plainest one for it."""
    return call.get("outcome") or _FROM_STATUS[call["status"]]
