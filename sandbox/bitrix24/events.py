"""The Bitrix24 sandbox's events: handlers (`event.bind`, `event.unbind`, `event.get`), offline
events (`event.offline.get`, `event.offline.clear`) and outgoing webhooks.

What Bitrix24's REST documentation says about events, and the sandbox does:

- The event methods work only in an application's authorization context: through an incoming
  webhook they answer 403 `WRONG_AUTH_TYPE` (server.APP_ONLY).
- `event.bind(event, handler, auth_type, event_type=online|offline, auth_connector, options)`:
  an unknown event is 400 `ERROR_EVENT_NOT_FOUND`; an offline binding needs no handler. Binding
  the same handler twice is refused with `ERROR_CORE` "Handler already binded" (what portals
  answer; the event.bind page is silent, so the stricter answer). `event.unbind(event, handler,
  auth_type, event_type)` removes every matching binding of that type: `{"count": n}`.
  `event.get` lists `{event, handler, auth_type, offline}`.
- Online: each change of a deal, lead, contact, company, activity (a call is an activity) or
  task queues one POST per matching handler, form-encoded: `event`, `event_handler_id`,
  `data[FIELDS][ID]` (tasks: `data[FIELDS_BEFORE]`, `data[FIELDS_AFTER]`,
  `data[IS_ACCESSIBLE_*]`, "undefined" where there is nothing), `ts`, `auth[...]` with the
  app's `application_token`. The event is named as its page names it (`ONCRMDEALUPDATE`,
  `onCrmActivityUpdate`, `ONTASKUPDATE`). No access or refresh token is sent: the docs say
  they are not always there, and a change made outside any user's request has none.
  Deliveries go through the queue server (`delivery.Deliverer`): never during the request that
  made the change, and a failed one is lost.
- One API call is one event per object however many fields it writes (a write-back of three
  custom fields is one ONCRMCONTACTUPDATE; the connector's own writes come back like anyone's).
- Offline: a change to an object with an offline binding for that event records one entry per
  object, however many changes: the entry takes the latest event name, data and time. An entry
  already handed to a process (`clear=0`) is hidden; a later change to its object makes a new
  entry, so nothing changed after the read is lost. A change made by a call that carries the
  binding's `auth_connector` is not recorded for it (how the docs avoid processing cycles).
  `event.offline.get(filter, order, limit=50, clear=1, process_id, error=0)` returns
  `{"process_id", "events": [{ID, TIMESTAMP_X, EVENT_NAME, EVENT_DATA, EVENT_ADDITIONAL,
  MESSAGE_ID}]}`; clear=1 deletes what it returns (process_id null), clear=0 marks it with a
  new process id (or the one given: "more records for the current process").
  `event.offline.clear(process_id, id[], message_id[])` deletes that process's records (those
  ids only, else those message ids only, else all).
- Outgoing webhooks (configured in the UI: `add_outgoing_webhook(url, events)`) deliver online
  events with their own token, and only `event`, `data`, `ts` and `auth[domain]`,
  `auth[member_id]`, `auth[application_token]` (what the docs show an outgoing webhook send).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from .params import ci_get
from .portal import Reply
from .query import ApiError
from .render import fmt_dt, parse_dt

__all__ = ["EventHub", "METHODS", "APP_ONLY"]

# entity plural -> (event prefix, the docs' spelling in deliveries, scope, offline object kind)
ENTITY = {
    "deals": ("ONCRMDEAL", "ONCRMDEAL", "crm", "deal"),
    "leads": ("ONCRMLEAD", "ONCRMLEAD", "crm", "lead"),
    "contacts": ("ONCRMCONTACT", "ONCRMCONTACT", "crm", "contact"),
    "companies": ("ONCRMCOMPANY", "ONCRMCOMPANY", "crm", "company"),
    "activities": ("ONCRMACTIVITY", "onCrmActivity", "crm", "activity"),
    "tasks": ("ONTASK", "ONTASK", "task", "task"),
}
ACTION = {"add": "ADD", "update": "UPDATE", "delete": "DELETE"}
SPELLED = {"ADD": "Add", "UPDATE": "Update", "DELETE": "Delete"}
UNDEFINED = "undefined"

# The events a portal's `events` method lists, as documented: others are unknown.
KNOWN_EVENTS = frozenset(
    f"{p}{s}"
    for p, s in [
        *(
            (p, s)
            for p in ("ONCRMLEAD", "ONCRMDEAL", "ONCRMCOMPANY", "ONCRMCONTACT", "ONCRMQUOTE", "ONCRMINVOICE")
            for s in (
                "ADD",
                "UPDATE",
                "DELETE",
                "USERFIELDADD",
                "USERFIELDUPDATE",
                "USERFIELDDELETE",
                "USERFIELDSETENUMVALUES",
            )
        ),
        *(
            (p, s)
            for p in (
                "ONCRMCURRENCY",
                "ONCRMPRODUCT",
                "ONCRMPRODUCTPROPERTY",
                "ONCRMPRODUCTSECTION",
                "ONCRMACTIVITY",
                "ONCRMREQUISITE",
                "ONCRMBANKDETAIL",
                "ONCRMMEASURE",
                "ONCRMTIMELINECOMMENT",
                "ONCRMDYNAMICITEM",
                "ONCRMTYPE",
                "ONCRMDOCUMENTGENERATORDOCUMENT",
                "ONTASK",
                "ONTASKCOMMENT",
            )
            for s in ("ADD", "UPDATE", "DELETE")
        ),
        *(
            (p, s)
            for p in ("ONCRMDEALRECURRING", "ONCRMINVOICERECURRING")
            for s in ("ADD", "UPDATE", "DELETE", "EXPOSE")
        ),
        ("ONCRMINVOICE", "SETSTATUS"),
        ("ONCRMDEAL", "MOVETOCATEGORY"),
        ("ONCRMADDRESS", "REGISTER"),
        ("ONCRMADDRESS", "UNREGISTER"),
        ("ONCRMREQUISITE", "USERFIELDADD"),
        ("ONAPP", "UNINSTALL"),
        ("ONAPP", "INSTALL"),
        ("ONAPP", "UPDATE"),
        ("ONAPP", "PAYMENT"),
        ("ONAPP", "TEST"),
        ("ONAPP", "METHODCONFIRM"),
        ("ONOFFLINE", "EVENT"),
        ("ONUSER", "ADD"),
    ]
)


@dataclass
class Binding:
    id: int
    event: str  # upper case
    handler: str  # "" for an offline binding
    auth_type: str
    offline: bool
    connector: str = ""
    options: object = None


@dataclass
class OutgoingWebhook:
    url: str
    events: frozenset
    token: str


@dataclass
class Entry:
    """One offline record: the latest change of one object."""

    id: int
    at: int
    event: str
    data: dict
    message_id: str
    obj: tuple
    process_id: str = ""
    error: int = 0


@dataclass
class _Call:
    connector: str | None
    changes: dict = field(default_factory=dict)  # (entity, id) -> action, in order


def pairs_of(prefix: str, value) -> list[tuple[str, str]]:
    """A nested dict as PHP-style form pairs: {"FIELDS": {"ID": 5}} -> data[FIELDS][ID]=5."""
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out += pairs_of(f"{prefix}[{k}]", v)
        return out
    return [(prefix, str(value))]


def event_data(entity: str, action: str, oid: int) -> dict:
    """The `data` of an event, as the event's page shows it."""
    if entity != "tasks":
        return {"FIELDS": {"ID": str(oid)}}
    before = UNDEFINED if action == "ADD" else {"ID": str(oid)}
    after = UNDEFINED if action == "DELETE" else {"ID": str(oid)}
    return {
        "FIELDS_BEFORE": before,
        "FIELDS_AFTER": after,
        "IS_ACCESSIBLE_BEFORE": "N" if action == "ADD" else UNDEFINED,
        "IS_ACCESSIBLE_AFTER": "N" if action == "DELETE" else UNDEFINED,
    }


class EventHub:
    """Bindings, the offline queue and outgoing webhooks of one sandbox portal.

    `portal_auth()` gives the `auth[...]` values a delivery carries (domain, client_endpoint,
    server_endpoint, member_id, application_token); `deliverer.send(url, pairs)` queues a POST.
    """

    def __init__(self, ds, deliverer, portal_auth: Callable[[], dict]):
        self.ds, self.deliverer, self.portal_auth = ds, deliverer, portal_auth
        self.bindings: dict[int, Binding] = {}
        self.outgoing: list[OutgoingWebhook] = []
        self.queue: list[Entry] = []
        self._next_binding = 0
        self._next_entry = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    # ---- what the dataset tells -----------------------------------------------------------
    def on_change(self, action: str, entity: str, oid: int) -> None:
        """`Dataset.listen` callback: a row was added, updated or deleted."""
        if entity == "calls":  # a call is an activity on the timeline: its events are those
            row = self.ds.by_id("calls").get(oid) or {}
            entity, oid = "activities", row.get("activity_id")
            if not oid:
                return
        if entity not in ENTITY or action not in ACTION:
            return
        call = getattr(self._local, "call", None)
        if call is None:
            self._emit(ACTION[action], entity, oid, None)
            return
        key = (entity, oid)
        had = call.changes.get(key)
        if had is None or action == "delete" or (had == "delete" and action == "add"):
            call.changes[key] = action

    @contextmanager
    def call(self, connector: str | None = None):
        """One API call: its changes become one event per object when it ends."""
        if getattr(self._local, "call", None) is not None:
            yield
            return
        self._local.call = call = _Call(connector or None)
        try:
            yield
        finally:
            self._local.call = None
            for (entity, oid), action in call.changes.items():
                self._emit(ACTION[action], entity, oid, call.connector)

    def _emit(self, action: str, entity: str, oid: int, connector: str | None) -> None:
        prefix, spelled, scope, kind = ENTITY[entity]
        name = prefix + action
        delivered = spelled + (action if spelled.isupper() else SPELLED[action])
        data = event_data(entity, action, oid)
        ts = str(int(time.time()))
        with self._lock:
            online = [b for b in self.bindings.values() if b.event == name and not b.offline]
            record = any(
                b.event == name and b.offline and not (connector and b.connector == connector)
                for b in self.bindings.values()
            )
            hooks = [w for w in self.outgoing if name in w.events]
            if record:
                self._record(name, data, (kind, oid))
        if not online and not hooks:
            return
        auth = self.portal_auth()
        for b in online:
            self.deliverer.send(
                b.handler,
                [
                    ("event", delivered),
                    ("event_handler_id", str(b.id)),
                    *pairs_of("data", data),
                    ("ts", ts),
                    ("auth[domain]", auth["domain"]),
                    ("auth[client_endpoint]", auth["client_endpoint"]),
                    ("auth[server_endpoint]", auth["server_endpoint"]),
                    ("auth[member_id]", auth["member_id"]),
                    ("auth[scope]", scope),
                    ("auth[status]", "L"),
                    ("auth[application_token]", auth["application_token"]),
                ],
            )
        for w in hooks:
            self.deliverer.send(
                w.url,
                [
                    ("event", delivered),
                    *pairs_of("data", data),
                    ("ts", ts),
                    ("auth[domain]", auth["domain"]),
                    ("auth[member_id]", auth["member_id"]),
                    ("auth[application_token]", w.token),
                ],
            )

    def _record(self, name: str, data: dict, obj: tuple) -> None:
        """One offline entry per object: update its open entry, else add one (under the lock)."""
        now = int(time.time())
        for e in self.queue:
            if e.obj == obj and not e.process_id and not e.error:
                e.event, e.data, e.at = name, data, now
                return
        self._next_entry += 1
        message_id = hashlib.md5(f"{obj[0]}:{obj[1]}".encode()).hexdigest()
        self.queue.append(Entry(self._next_entry, now, name, data, message_id, obj))

    # ---- outgoing webhooks (the UI) -------------------------------------------------------
    def add_outgoing_webhook(self, url: str, events) -> str:
        token = secrets.token_hex(16)
        with self._lock:
            self.outgoing.append(OutgoingWebhook(url, frozenset(e.upper() for e in events), token))
        return token

    # ---- event.bind / event.unbind / event.get ----------------------------------------------
    def bind(self, params: dict) -> bool:
        event = str(ci_get(params, "event") or "").upper()
        if event not in KNOWN_EVENTS:
            raise ApiError("ERROR_EVENT_NOT_FOUND", "Event not found", 400)
        offline = _event_type(params) == "offline"
        handler = "" if offline else str(ci_get(params, "handler") or "")
        if not offline and not handler:
            raise ApiError("ERROR_ARGUMENT", "Argument 'handler' is null or empty", 400)
        auth_type = str(ci_get(params, "auth_type") or "0")
        connector = str(ci_get(params, "auth_connector") or "")
        with self._lock:
            for b in self.bindings.values():
                if (b.event, b.handler, b.auth_type, b.offline, b.connector) == (
                    event,
                    handler,
                    auth_type,
                    offline,
                    connector,
                ):
                    raise ApiError("ERROR_CORE", "Handler already binded", 400)
            self._next_binding += 1
            self.bindings[self._next_binding] = Binding(
                self._next_binding, event, handler, auth_type, offline, connector, ci_get(params, "options")
            )
        return True

    def unbind(self, params: dict) -> dict:
        event = str(ci_get(params, "event") or "").upper()
        offline = _event_type(params) == "offline"
        handler, auth_type = ci_get(params, "handler"), ci_get(params, "auth_type")
        with self._lock:
            gone = [
                b.id
                for b in self.bindings.values()
                if b.offline == offline
                and (not event or b.event == event)
                and (handler in (None, "") or b.handler == str(handler))
                and (auth_type is None or b.auth_type == (str(auth_type) or "0"))
            ]
            for i in gone:
                del self.bindings[i]
        return {"count": len(gone)}

    def get(self, params: dict) -> list[dict]:
        with self._lock:
            return [
                {"event": b.event, "handler": b.handler, "auth_type": b.auth_type, "offline": int(b.offline)}
                for b in self.bindings.values()
            ]

    # ---- event.offline.get / event.offline.clear --------------------------------------------
    def offline_get(self, params: dict) -> dict:
        test = _offline_filter(ci_get(params, "filter"))
        order = _offline_order(ci_get(params, "order"))
        limit = _int(ci_get(params, "limit"), 50, "limit")
        clear = _int(ci_get(params, "clear"), 1, "clear")
        error = _int(ci_get(params, "error"), 0, "error")
        given = str(ci_get(params, "process_id") or "")
        with self._lock:
            rows = [e for e in self.queue if not e.process_id and e.error == error and test(e)]
            for key, desc in reversed(order):
                rows.sort(key=key, reverse=desc)
            rows = rows[: max(0, limit)]
            if clear:
                taken = {id(e) for e in rows}
                self.queue = [e for e in self.queue if id(e) not in taken]
                pid = None
            else:
                pid = given or secrets.token_hex(16)
                for e in rows:
                    e.process_id = pid
            events = [
                {
                    "ID": str(e.id),
                    "TIMESTAMP_X": fmt_dt(e.at),
                    "EVENT_NAME": e.event,
                    "EVENT_DATA": e.data,
                    "EVENT_ADDITIONAL": False,
                    "MESSAGE_ID": e.message_id,
                }
                for e in rows
            ]
        return {"process_id": pid, "events": events}

    def offline_clear(self, params: dict) -> bool:
        pid = str(ci_get(params, "process_id") or "")
        if not pid:
            raise ApiError("ERROR_ARGUMENT", "Argument 'process_id' is null or empty", 400)
        ids, mids = _strings(ci_get(params, "id")), _strings(ci_get(params, "message_id"))
        with self._lock:

            def cleared(e: Entry) -> bool:
                if e.process_id != pid:
                    return False
                if ids is not None:
                    return str(e.id) in ids
                return mids is None or e.message_id in mids

            self.queue = [e for e in self.queue if not cleared(e)]
        return True


def _event_type(params: dict) -> str:
    t = str(ci_get(params, "event_type") or "online").lower()
    if t not in ("online", "offline"):
        raise ApiError("ERROR_ARGUMENT", "Argument 'event_type' must be online or offline", 400)
    return t


def _int(value, default: int, name: str) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError("ERROR_ARGUMENT", f"Argument '{name}' must be a number", 400) from None


def _strings(value) -> set[str] | None:
    if value in (None, "", []):
        return None
    if isinstance(value, dict):
        value = list(value.values())
    return {str(v) for v in (value if isinstance(value, list) else [value])}


# The fields event.offline.get filters and sorts on, and how to read them from an entry.
_FIELDS = {
    "ID": (lambda e: e.id, int),
    "TIMESTAMP_X": (lambda e: e.at, parse_dt),
    "EVENT_NAME": (lambda e: e.event, lambda v: str(v).upper()),
    "MESSAGE_ID": (lambda e: e.message_id, str),
}
_OPS = {
    "=": lambda a, b: a == b,
    "!": lambda a, b: a != b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _offline_filter(flt) -> Callable[[Entry], bool]:
    if flt in (None, "", []):
        return lambda e: True
    if not isinstance(flt, dict):
        raise ApiError("ERROR_ARGUMENT", "Argument 'filter' must be array", 400)
    tests = []
    for key, raw in flt.items():
        key = str(key)
        op = next((o for o in (">=", "<=", "!=", "=", "!", ">", "<") if key.startswith(o)), "")
        name = key[len(op) :].upper()
        if name not in _FIELDS:
            raise ApiError("ERROR_ARGUMENT", f"Filter field '{name}' is not supported", 400)
        get, conv = _FIELDS[name]
        try:
            want = conv(raw)
        except (TypeError, ValueError):
            raise ApiError("ERROR_ARGUMENT", f"Invalid filter value for '{name}'", 400) from None
        cmp = _OPS[op or "="]
        tests.append(lambda e, get=get, cmp=cmp, want=want: cmp(get(e), want))
    return lambda e: all(t(e) for t in tests)


def _offline_order(order) -> list[tuple]:
    if order in (None, "", []):
        return [(_FIELDS["TIMESTAMP_X"][0], False), (_FIELDS["ID"][0], False)]
    if not isinstance(order, dict):
        raise ApiError("ERROR_ARGUMENT", "Argument 'order' must be array", 400)
    out = []
    for key, direction in order.items():
        name = str(key).upper()
        if name not in _FIELDS:
            raise ApiError("ERROR_ARGUMENT", f"Order field '{name}' is not supported", 400)
        out.append((_FIELDS[name][0], str(direction).upper() == "DESC"))
    return out


# ---- the REST methods (each takes (portal, params); the server checks the auth context) ---


def _hub(p) -> EventHub:
    return p.events


METHODS = {
    "event.bind": lambda p, params: Reply(_hub(p).bind(params)),
    "event.unbind": lambda p, params: Reply(_hub(p).unbind(params)),
    "event.get": lambda p, params: Reply(_hub(p).get(params)),
    "event.offline.get": lambda p, params: Reply(_hub(p).offline_get(params)),
    "event.offline.clear": lambda p, params: Reply(_hub(p).offline_clear(params)),
}
# Methods that work only in an application's authorization context (each one's page says so):
# through an incoming webhook they answer 403 WRONG_AUTH_TYPE.
APP_ONLY = frozenset(METHODS)
