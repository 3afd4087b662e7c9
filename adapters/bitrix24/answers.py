"""What a Bitrix24 answer says before it is read as a result: its error code, whether the HTTP
layer may send the request again, whether it stops the source, whether the request was
likely cut at the 60-second cap.
"""

from __future__ import annotations

import requests

from adapters.errors import StreamError
from adapters.http import RetryableResponse

# Answers about the whole portal: no request can succeed until a person acts, so the source
# stops at once (not retried, whatever the HTTP status: the docs give 500 or 403 for the
# first, 503 or 401 for the second).
STOP_CODES = {
    "PORTAL_DELETED": "the portal answers PORTAL_DELETED: it was deleted, or (on-premise) its "
    "public part is closed; check the portal address in the config, or reopen the site (Settings "
    "> Module settings > Main module > Temporary closure of the public part of the site)",
    "OVERLOAD_LIMIT": "Bitrix24 blocked this portal's REST API for overload (OVERLOAD_LIMIT), a "
    "manual block that only Bitrix24 support can lift; contact support, the sync fails until then",
}


def error_code(response: requests.Response) -> str | None:
    """The Bitrix24 error code (upper-cased) of a non-2xx answer, or None when its body is not
    Bitrix24's JSON (a proxy's HTML page, say)."""
    if 200 <= response.status_code < 300:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or "error" not in body:
        return None
    return str(body.get("error") or "").upper()


class RequestCut(StreamError):
    """A batch failed as a request cut at Bitrix24's 60 s does (the front end's 504 page, or no
    answer within our own timeout): send its sub-calls in smaller batches, not again the same
    way."""


def cut_like(exc: BaseException) -> bool:
    """Whether a failed request was likely cut for taking too long: a gateway timeout (504)
    that is not Bitrix24's own JSON, or no answer within the read timeout. Other faults (a 500
    or 502 page, a reset) are transient: the same request is simply sent again."""
    if isinstance(exc, RetryableResponse):
        return exc.response.status_code == 504 and error_code(exc.response) is None
    return isinstance(exc, requests.ReadTimeout)


def retryable(response: requests.Response) -> bool:
    """Which answers the HTTP layer retries: 5xx, but not the whole-portal answers (STOP_CODES)."""
    return response.status_code >= 500 and error_code(response) not in STOP_CODES


# How the Bitrix24 UI names the field types the connector creates.
UI_TYPES = {"double": "Number", "date": "Date"}


def admin_only(source: str, method: str, fields) -> str:
    """What to say when `crm.*.userfield.add` was refused with Access denied: only a CRM
    administrator may create custom fields."""
    fields = fields if isinstance(fields, dict) else {}
    code = str(fields.get("FIELD_NAME") or "?")
    entity = method.split(".")[1] if method.count(".") >= 2 else "CRM"
    kind = UI_TYPES.get(str(fields.get("USER_TYPE_ID")), str(fields.get("USER_TYPE_ID") or "?"))
    return (
        f"Bitrix24 source '{source}': cannot create the {entity} field UF_CRM_{code} "
        f"('{fields.get('LABEL') or code}'): Bitrix24 answered Access denied, as only a CRM "
        f"administrator may create custom fields; have an administrator create it (type {kind}, "
        f"code {code}), or use a CRM administrator's webhook or app, then run `crm-connector kpi` again"
    )
