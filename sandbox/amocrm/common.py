"""Shared pieces of the amoCRM sandbox: constants, the error type, problem+json replies."""

from __future__ import annotations

from sandbox.httpbase import Response

WON, LOST = 142, 143
HAL = "application/hal+json"
PROBLEM = "application/problem+json"
ACCOUNT_ID = 31_000_001
PHONE_FIELD, EMAIL_FIELD = 899_001, 899_002  # contacts' predefined multitext fields
# Call outcome -> note call_status: 4 talked, 6 no answer, 7 busy, 3 not available, 5 wrong number.
CALL_STATUS = {"talked": 4, "no_answer": 6, "busy": 7, "declined": 3, "wrong_number": 5}
PLURAL = {"deal": "leads", "contact": "contacts", "company": "companies", "customer": "customers"}
# `customers_mode` of GET /api/v4/account in which customers are on (else "disabled", or
# "unavailable" on a plan without them); "dynamic" is deprecated but still reported.
CUSTOMERS_ON = ("segments", "periodicity", "dynamic")
SINGULAR = {v: k for k, v in PLURAL.items()}

# The event types amoCRM's API documentation lists (its table "Типы событий"):
# `filter[type][]` accepts only these. Tasks have `task_deleted` but no `task_restored`.
EVENT_TYPES = frozenset(
    (
        "lead_added",
        "lead_deleted",
        "lead_restored",
        "lead_status_changed",
        "contact_added",
        "contact_deleted",
        "contact_restored",
        "company_added",
        "company_deleted",
        "company_restored",
        "task_added",
        "task_deleted",
        "task_completed",
        "task_result_added",
        "task_text_changed",
        "task_deadline_changed",
        "task_type_changed",
        "entity_merged",
        "entity_responsible_changed",
        "common_note_added",
        "incoming_call",
        "outgoing_call",
        "incoming_chat_message",
        "outgoing_chat_message",
        "incoming_sms",
        "outgoing_sms",
        "nps_rate_added",
    )
)


# The note types amoCRM documents for the notes lists: `filter[note_type]` accepts only these.
NOTE_TYPES = frozenset(
    (
        "common",
        "call_in",
        "call_out",
        "service_message",
        "extended_service_message",
        "message_cashier",
        "geolocation",
        "sms_in",
        "sms_out",
        "attachment",
    )
)


class ApiError(Exception):
    def __init__(self, status: int, detail: str, **extra):
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


def problem(status: int, title: str, detail: str | None = None, **extra) -> Response:
    body = {"title": title, "type": f"https://httpstatus.es/{status}", "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response.json(body, status, PROBLEM)


TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
}
