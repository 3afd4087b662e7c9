"""amoCRM webhooks in the sandbox: `GET|POST|DELETE /api/v4/webhooks`, and a delivery to every
registered destination subscribed to the event a dataset change is.

Registration (amoCRM's webhooks API page): account admins only (403 otherwise); `POST` takes
JSON `{destination, settings[, sort]}`, both required: a valid http(s) URL (no Cyrillic
domains) and a non-empty list of the documented event names; a destination already
registered is updated with the new settings; 201 with the webhook object. At most 100
webhooks per account. `DELETE` takes `{destination}`: 204, or 404 when no webhook has it.
`GET` lists them (`filter[destination]`: one exact address); an empty list is a 204, as
every empty amoCRM list. Bad input is a 400 with `validation-errors`.

Deliveries (amoCRM's webhook format page): `application/x-www-form-urlencoded`, the PHP-style
array `entity[action][0][field]=value` of one changed entity, then `account[subdomain]`,
`account[id]` and `account[_links][self]`. Entities: `leads`, `contacts` (companies too, told
apart by `[type]` = `contact` or `company`), `task` (singular). Actions: `add`, `update`,
`delete` (the entity's id, plus `type` for contacts and companies), `restore`, `status` (a
lead's stage moved: `status_id`, `old_status_id`, `pipeline_id`). A stage move is both an
`update_lead` and a `status_lead`; each event a webhook is subscribed to is one delivery. The
fields carry amoCRM's older names (`date_create`, `last_modified`, `created_user_id`,
`custom_fields`); task dates are "YYYY-MM-DD HH:MM:SS" in the account's time zone (+03:00).
Custom-field writes through the API (`PATCH` contacts or companies) are edits like any other
and fire `update_contact` / `update_company` (our own write-back comes back as an echo).

Not modelled: `responsible_*` and `note_*` events, several entities in one delivery, a task
restored from the trash (amoCRM documents no `restore_task`: none is sent), and the retries
after a failed delivery (5 and 15 minutes later): a failed delivery is lost. A webhook is
disabled, as amoCRM does, once more than 100 deliveries failed within 2 hours and the last
one failed too: it is listed `disabled` and gets no more deliveries until re-enabled (amoCRM:
from its settings page; here `enable_webhook(destination)`).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from sandbox.amocrm.common import ACCOUNT_ID, ApiError, problem
from sandbox.deliver import Deliverer
from sandbox.httpbase import Request, Response

MAX_WEBHOOKS = 100
FAILURES_TO_DISABLE, FAILURE_WINDOW_S = 100, 2 * 3600
ACCOUNT_TZ = timezone(timedelta(hours=3))  # the account's datetime_settings: +03:00

# The events amoCRM's webhooks API lists ("Возможные события").
EVENTS = frozenset(
    (
        "responsible_lead",
        "responsible_contact",
        "responsible_company",
        "responsible_customer",
        "responsible_task",
        "restore_lead",
        "restore_contact",
        "restore_company",
        "add_lead",
        "add_contact",
        "add_company",
        "add_customer",
        "add_talk",
        "add_task",
        "update_lead",
        "update_contact",
        "update_company",
        "update_customer",
        "update_talk",
        "update_task",
        "delete_lead",
        "delete_contact",
        "delete_company",
        "delete_customer",
        "delete_task",
        "status_lead",
        "note_lead",
        "note_contact",
        "note_company",
        "note_customer",
        "add_chat_template_review",
    )
)

# dataset entity -> (event suffix, form entity key, `type` value or None)
ENTITY = {
    "deals": ("lead", "leads", None),
    "contacts": ("contact", "contacts", "contact"),
    "companies": ("company", "contacts", "company"),
    "tasks": ("task", "task", None),
}
ELEMENT_TYPE = {"contact": "1", "deal": "2", "company": "3", "customer": "12"}


class AmoWebhooks:
    """Mixin for AmoSandbox: the webhooks endpoints and deliveries. Knobs: `deliverer` (the
    `sandbox.deliver.Deliverer`: `drop_next`, `repeat`, `delay_s`, `forge`, `pause`,
    `sent`, `wait`), `webhooks` (the registered ones), `hook_pairs(event, id)` (the form
    pairs a delivery of `event` for that row carries now; `account_id` / `subdomain` to
    forge one), `enable_webhook(destination)`."""

    def _init_webhooks(self) -> None:
        self.webhooks: list[dict] = []
        self._hooks_lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}
        self.deliverer = Deliverer(on_result=self._delivery_ended)
        self.dataset.listen(self._on_change)

    # ---- the API -------------------------------------------------------------------------
    def _webhooks_route(self, req: Request) -> Response:
        if not self.is_admin:
            raise ApiError(403, "Insufficient rights")
        if req.method == "GET":
            return self._list_webhooks(req)
        if req.method == "POST":
            return self._add_webhook(req)
        if req.method == "DELETE":
            return self._delete_webhook(req)
        raise ApiError(405, "Method not allowed")

    def _list_webhooks(self, req: Request) -> Response:
        wanted = req.get("filter[destination]")
        with self._hooks_lock:
            hooks = [dict(h) for h in self.webhooks if wanted is None or h["destination"] == wanted]
        if not hooks:
            return Response.empty(204)
        return self._hal(
            {
                "_total_items": len(hooks),
                "_links": self._self("/api/v4/webhooks"),
                "_embedded": {"webhooks": hooks},
            }
        )

    def _add_webhook(self, req: Request) -> Response:
        body = _json_object(req)
        errors = []
        destination = body.get("destination")
        if not _valid_url(destination):
            errors.append(
                _err(
                    "NotValidUrl" if destination else "NotBlank",
                    "destination",
                    "This value is not a valid URL." if destination else "This value should not be blank.",
                )
            )
        settings = body.get("settings")
        if not isinstance(settings, list) or not settings:
            errors.append(_err("NotBlank", "settings", "This value should not be blank."))
        else:
            errors += [
                _err("NotSupportedChoice", f"settings.{i}", "The value you selected is not a valid choice.")
                for i, s in enumerate(settings)
                if s not in EVENTS
            ]
        sort = body.get("sort", 1)
        if not isinstance(sort, int) or isinstance(sort, bool):
            errors.append(_err("InvalidType", "sort", "This value should be of type int."))
        if errors:
            return _validation(errors)
        now = int(time.time())
        with self._hooks_lock:
            hook = next((h for h in self.webhooks if h["destination"] == destination), None)
            if hook is None:
                if len(self.webhooks) >= MAX_WEBHOOKS:
                    return _validation(
                        [_err("TooMany", "destination", f"An account has at most {MAX_WEBHOOKS} webhooks.")]
                    )
                hook = {
                    "id": 1_056_900 + len(self.webhooks) + 1,
                    "destination": destination,
                    "created_at": now,
                    "account_id": ACCOUNT_ID,
                    "created_by": self.dataset.users[0]["id"] if self.dataset.users else 0,
                    "disabled": False,
                }
                self.webhooks.append(hook)
            hook.update(updated_at=now, sort=sort, settings=list(dict.fromkeys(settings)))
            out = dict(hook)
        return self._hal(out, 201)

    def _delete_webhook(self, req: Request) -> Response:
        destination = _json_object(req).get("destination")
        if not isinstance(destination, str) or not destination:
            return _validation([_err("NotBlank", "destination", "This value should not be blank.")])
        with self._hooks_lock:
            before = len(self.webhooks)
            self.webhooks[:] = [h for h in self.webhooks if h["destination"] != destination]
            if len(self.webhooks) == before:
                raise ApiError(404, "Webhook not found")
            self._failures.pop(destination, None)
        return Response.empty(204)

    def enable_webhook(self, destination: str) -> None:
        """What the account's settings page does for a webhook amoCRM disabled."""
        with self._hooks_lock:
            for h in self.webhooks:
                if h["destination"] == destination:
                    h["disabled"] = False
            self._failures.pop(destination, None)

    # ---- deliveries ----------------------------------------------------------------------
    def _on_change(self, action: str, entity: str, row_id: int) -> None:
        """A dataset change (the dataset's listener): queue its deliveries, never wait."""
        if entity not in ENTITY or not self.webhooks:
            return
        events = self._events_of(action, entity, row_id)
        with self._hooks_lock:
            targets = [
                (h["destination"], [e for e in events if e in h["settings"]])
                for h in self.webhooks
                if not h["disabled"]
            ]
        for destination, subscribed in targets:
            for event in subscribed:
                self.deliverer.send(destination, self.hook_pairs(event, row_id))

    def _events_of(self, action: str, entity: str, row_id: int) -> list[str]:
        suffix = ENTITY[entity][0]
        if action == "delete":
            return [f"delete_{suffix}"]
        if action == "update":
            moved = entity == "deals" and self._stage_move(row_id) is not None
            return [f"update_{suffix}"] + (["status_lead"] if moved else [])
        if self._restored(entity, row_id):
            return [] if entity == "tasks" else [f"restore_{suffix}"]
        return [f"add_{suffix}"]

    def _restored(self, entity: str, row_id: int) -> bool:
        """An `add` told for a row brought back from the trash (its "restored" event)."""
        ds = self.dataset
        row = ds.by_id(entity).get(row_id)
        single = {"deals": "deal", "contacts": "contact", "companies": "company", "tasks": "task"}[entity]
        return row is not None and any(
            e["type"] == "restored"
            and e["entity"] == single
            and e["entity_id"] == row_id
            and e["at"] == row["updated_at"]
            for e in ds.events[-20:]
        )

    def _stage_move(self, deal_id: int) -> dict | None:
        """The stage change this deal's latest update made, if it moved the deal."""
        ds = self.dataset
        row = ds.by_id("deals").get(deal_id)
        if row is None:
            return None
        return next(
            (
                sc
                for sc in reversed(ds.stage_changes[-20:])
                if sc["deal_id"] == deal_id
                and sc["changed_at"] == row["updated_at"]
                and sc["previous_stage_id"]
            ),
            None,
        )

    def hook_pairs(
        self, event: str, row_id: int, *, account_id: int | None = None, subdomain: str | None = None
    ) -> list[tuple[str, str]]:
        """The form pairs a delivery of `event` (`update_lead`, `delete_company`...) for the
        row `row_id` carries, as things stand now."""
        action, _, suffix = event.partition("_")
        entity = {"lead": "deals", "contact": "contacts", "company": "companies", "task": "tasks"}[suffix]
        _, key, kind = ENTITY[entity]
        row = self.dataset.by_id(entity)[row_id]
        if action == "delete":
            fields = [("id", str(row_id))] + ([("type", kind)] if kind else [])
        elif entity == "deals":
            fields = self._lead_fields(row, action)
        elif entity == "tasks":
            fields = self._task_fields(row, action)
        else:
            fields = self._card_fields(row, kind)
        pairs = [(f"{key}[{action}][0]{_brackets(name)}", value) for name, value in fields]
        return pairs + [
            ("account[subdomain]", subdomain or "sandbox"),
            ("account[id]", str(ACCOUNT_ID if account_id is None else account_id)),
            ("account[_links][self]", self.url),
        ]

    def _lead_fields(self, d: dict, action: str) -> list[tuple]:
        out = [("id", d["id"]), ("name", d["name"]), ("status_id", self._status_id(d["stage_id"]))]
        if action == "status":
            move = self._stage_move(d["id"])
            if move is not None:
                out.append(("old_status_id", self._status_id(move["previous_stage_id"])))
        out += [
            ("pipeline_id", d["pipeline_id"]),
            ("price", int(round(d["amount"]))),
            ("responsible_user_id", d["responsible_user_id"]),
            ("last_modified", d["updated_at"]),
            ("modified_user_id", 0),
            ("created_user_id", 0),
            ("date_create", d["created_at"]),
            ("account_id", ACCOUNT_ID),
            ("created_at", d["created_at"]),
            ("updated_at", d["updated_at"]),
        ]
        if d.get("utm_source"):
            out += [
                ("custom_fields.0.id", 899_010),
                ("custom_fields.0.name", "utm_source"),
                ("custom_fields.0.values.0", d["utm_source"]),
            ]
        return _text(out)

    def _card_fields(self, c: dict, kind: str) -> list[tuple]:
        out = [
            ("id", c["id"]),
            ("name", c["name"]),
            ("responsible_user_id", c["responsible_user_id"]),
            ("date_create", c["created_at"]),
            ("last_modified", c["updated_at"]),
            ("created_user_id", 0),
            ("modified_user_id", 0),
        ]
        if kind == "contact" and c.get("company_id"):
            company = self.dataset.by_id("companies").get(c["company_id"])
            out += [
                ("company_name", company["name"] if company else ""),
                ("linked_company_id", c["company_id"]),
            ]
        out.append(("account_id", ACCOUNT_ID))
        for n, f in enumerate(self._values(kind, c) or ()):
            out += [
                (f"custom_fields.{n}.id", f["field_id"]),
                (f"custom_fields.{n}.name", f["field_name"]),
                (f"custom_fields.{n}.values.0.value", f["values"][0]["value"]),
            ]
            if f.get("field_code"):
                out.append((f"custom_fields.{n}.code", f["field_code"]))
        for deal_id in self._linked_deals(kind, c["id"]):
            out.append((f"linked_leads_id.{deal_id}.ID", deal_id))
        out += [("created_at", c["created_at"]), ("updated_at", c["updated_at"]), ("type", kind)]
        return _text(out)

    def _linked_deals(self, kind: str, card_id: int) -> list[int]:
        if kind == "contact":
            return list(self._deals_of_contact().get(card_id, ()))
        ds = self.dataset

        def build():
            idx: dict = {}
            for d in ds.deals:
                if d["company_id"] and not d["is_deleted"]:
                    idx.setdefault(d["company_id"], []).append(d["id"])
            return idx

        return list(self._cached(("deals_of_company", ds.versions["deals"]), build).get(card_id, ()))

    def _task_fields(self, t: dict, action: str) -> list[tuple]:
        done = bool(t["is_completed"])
        out = [
            ("id", t["id"]),
            ("element_id", t["entity_id"] or 0),
            ("element_type", ELEMENT_TYPE.get(t["entity_type"], "0")),
            ("task_type", 1),
            ("date_create", _when(t["created_at"])),
            ("text", t["text"]),
            ("status", int(done)),
            ("account_id", ACCOUNT_ID),
            ("created_user_id", 0),
            ("last_modified", _when(t["updated_at"])),
            ("responsible_user_id", t["responsible_user_id"]),
            ("complete_till", _when(t["due_at"])),
        ]
        if action == "update":
            closed = done and t.get("completed_at") == t["updated_at"]
            out.append(("action_close", int(closed)))
        if done:
            out.append(("result.text", "Done"))
        return _text(out)

    def _delivery_ended(self, entry: dict) -> None:
        """amoCRM disables a webhook after more than 100 failed deliveries in 2 hours, the
        last one failed too."""
        if entry["forged"]:
            return
        now = time.time()
        with self._hooks_lock:
            fails = self._failures.setdefault(entry["url"], [])
            if entry["ok"]:
                return
            fails.append(now)
            fails[:] = [t for t in fails if t > now - FAILURE_WINDOW_S]
            if len(fails) > FAILURES_TO_DISABLE:
                for h in self.webhooks:
                    if h["destination"] == entry["url"]:
                        h["disabled"] = True


def _brackets(name: str) -> str:
    """`custom_fields.0.id` -> `[custom_fields][0][id]`."""
    return "".join(f"[{part}]" for part in name.split("."))


def _text(fields: list[tuple]) -> list[tuple[str, str]]:
    return [(k, "" if v is None else str(v)) for k, v in fields]


def _when(ts: int | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, ACCOUNT_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _valid_url(value) -> bool:
    """An http(s) URL with a host; amoCRM does not support Cyrillic (non-ASCII) domains."""
    if not isinstance(value, str) or not value or len(value) > 2048:
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(host)
        and host.isascii()
        and not any(ch.isspace() for ch in value)
    )


def _json_object(req: Request) -> dict:
    try:
        body = req.json()
    except ValueError:
        raise ApiError(400, "Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return body


def _err(code: str, path: str, detail: str) -> dict:
    return {"code": code, "path": path, "detail": detail}


def _validation(errors: list) -> Response:
    return problem(
        400,
        "Bad Request",
        "Request validation failed",
        **{"validation-errors": [{"request_id": "0", "errors": errors}]},
    )
