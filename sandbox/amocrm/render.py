"""How the amoCRM sandbox renders dataset rows: leads, contacts, companies, tasks, notes,
users, custom fields, events, the account and pipelines, in amoCRM's v4 shapes."""

from __future__ import annotations

from sandbox.amocrm.common import ACCOUNT_ID, CALL_STATUS, EMAIL_FIELD, LOST, PHONE_FIELD, PLURAL, WON
from sandbox.amocrm.query import strs
from sandbox.call_outcomes import outcome_of
from sandbox.data_interactions import SOURCES as SOURCE_NAMES
from sandbox.httpbase import Request, Response

NOTE_ID_BASE = 8_000_000  # ids of the system notes `lead_added` events point at
UTM_SOURCE_FIELD = 899_010  # the leads' tracking-data field `utm_source`
SOURCE_ID_BASE = 7_700  # lead sources (`with=source`), one per dataset source name
EVENT_KINDS = "setcn"  # event seq % 5: stage change, event, task, chat message, NPS
CHAT_EVENTS = {"in": "incoming_chat_message", "out": "outgoing_chat_message"}


class AmoRender:
    """Mixin for AmoSandbox: one method per item shape."""

    def _status_id(self, stage_id: int) -> int:
        sem = self.dataset.stage(stage_id)[1]["semantics"]
        return WON if sem == "won" else LOST if sem == "lost" else stage_id

    def _self(self, path: str) -> dict:
        return {"self": {"href": f"{self.url}{path}"}}

    def _ref(self, plural: str, rid: int, **more) -> dict:
        """An embedded reference to another item: its id (then `more`) and its link."""
        return {"id": rid, **more, "_links": self._self(f"/api/v4/{plural}/{rid}")}

    def _company_ref(self, row: dict) -> list:
        """The `companies` a lead, contact or customer embeds: its one company, if any."""
        return [self._ref("companies", row["company_id"])] if row["company_id"] else []

    def _contact_refs(self, contact_ids) -> list:
        """The `contacts` a lead or customer embeds; the first is the main one."""
        return [self._ref("contacts", c, is_main=i == 0) for i, c in enumerate(contact_ids)]

    def _lead(self, d: dict, with_: set) -> dict:
        emb = {"tags": [], "companies": self._company_ref(d)}
        if "contacts" in with_:
            emb["contacts"] = self._contact_refs(d["contact_ids"])
        if "source" in with_ and d.get("source"):
            emb["source"] = self._source(d["source"])
        return {
            "id": d["id"],
            "name": d["name"],
            "price": int(round(d["amount"])),
            "responsible_user_id": d["responsible_user_id"],
            "group_id": 0,
            "status_id": self._status_id(d["stage_id"]),
            "pipeline_id": d["pipeline_id"],
            "loss_reason_id": None,
            "created_by": 0,
            "updated_by": 0,
            "created_at": d["created_at"],
            "updated_at": d["updated_at"],
            "closed_at": d["closed_at"],
            "closest_task_at": None,
            "is_deleted": bool(d["is_deleted"]),
            "custom_fields_values": _tracking(d),
            "score": None,
            "account_id": ACCOUNT_ID,
            "labor_cost": None,
            "_links": self._self(f"/api/v4/leads/{d['id']}"),
            "_embedded": emb,
        }

    def _source(self, name: str) -> dict:
        sid = SOURCE_ID_BASE + sorted(SOURCE_NAMES).index(name) if name in SOURCE_NAMES else 0
        return {
            "id": sid,
            "name": name,
            "external_id": None,
            "type": "api",
            "_links": self._self(f"/api/v4/sources/{sid}"),
        }

    def _deleted_lead(self, d: dict, with_: set) -> dict:
        return {
            "id": d["id"],
            "updated_at": d["updated_at"],
            "updated_by": 0,
            "is_deleted": True,
            "_links": self._self(f"/api/v4/leads/{d['id']}"),
        }

    def _contact(self, c: dict, with_: set) -> dict:
        emb = {"tags": [], "companies": self._company_ref(c)}
        if "leads" in with_:
            emb["leads"] = [self._ref("leads", i) for i in self._deals_of_contact().get(c["id"], ())]
        return {
            "id": c["id"],
            "name": c["name"],
            "first_name": c["first_name"],
            "last_name": c["last_name"],
            "responsible_user_id": c["responsible_user_id"],
            "group_id": 0,
            "created_by": 0,
            "updated_by": 0,
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
            "closest_task_at": None,
            "is_deleted": bool(c["is_deleted"]),
            "is_unsorted": False,
            "custom_fields_values": self._values("contact", c),
            "account_id": ACCOUNT_ID,
            "_links": self._self(f"/api/v4/contacts/{c['id']}"),
            "_embedded": emb,
        }

    def _company(self, c: dict, with_: set) -> dict:
        emb = {"tags": []}
        if "contacts" in with_:
            emb["contacts"] = [self._ref("contacts", i) for i in self._contacts_of_company().get(c["id"], ())]
        return {
            "id": c["id"],
            "name": c["name"],
            "responsible_user_id": c["responsible_user_id"],
            "group_id": 0,
            "created_by": 0,
            "updated_by": 0,
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
            "closest_task_at": None,
            "is_deleted": bool(c["is_deleted"]),
            "custom_fields_values": self._values("company", c),
            "account_id": ACCOUNT_ID,
            "_links": self._self(f"/api/v4/companies/{c['id']}"),
            "_embedded": emb,
        }

    def _customer(self, c: dict, with_: set) -> dict:
        """A customer (Customers mode): contacts with `with=contacts` (one `is_main`), its one
        company with `with=companies`."""
        emb = {"segments": [], "tags": []}
        if "contacts" in with_:
            emb["contacts"] = self._contact_refs(c["contact_ids"])
        if "companies" in with_:
            emb["companies"] = self._company_ref(c)
        return {
            "id": c["id"],
            "name": c["name"],
            "next_price": 0,
            "next_date": c["updated_at"] + 30 * 86400,
            "responsible_user_id": c["responsible_user_id"],
            "status_id": 0,
            "periodicity": 0,
            "created_by": 0,
            "updated_by": 0,
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
            "closest_task_at": None,
            "is_deleted": bool(c["is_deleted"]),
            "custom_fields_values": None,
            "ltv": 0,
            "purchases_count": 0,
            "average_check": 0,
            "account_id": ACCOUNT_ID,
            "_links": self._self(f"/api/v4/customers/{c['id']}"),
            "_embedded": emb,
        }

    def _values(self, et: str, row: dict) -> list | None:
        """custom_fields_values in amoCRM's read shape, or None when the card has none."""
        out = []
        if et == "contact":
            for fid, name, code, v in (
                (PHONE_FIELD, "Телефон", "PHONE", row.get("phone")),
                (EMAIL_FIELD, "Email", "EMAIL", row.get("email")),
            ):
                if v:
                    out.append(
                        {
                            "field_id": fid,
                            "field_name": name,
                            "field_code": code,
                            "field_type": "multitext",
                            "values": [{"value": v, "enum_id": 1, "enum_code": "WORK"}],
                        }
                    )
        fmap = self._field_map(et)
        for fid, v in row["custom"].items():
            f = fmap.get(fid)
            if f is None:
                continue
            if f["type"] == "numeric":
                value = {"value": _num_str(v)}
            elif f["type"] in ("date", "date_time", "birthday"):
                value = {"value": int(v)}  # dates read back as Unix seconds
            else:
                value = {"value": str(v)}
            for e in f.get("enums") or ():
                if e["value"] == v:
                    value["enum_id"] = e["id"]
            out.append(
                {
                    "field_id": fid,
                    "field_name": f["name"],
                    "field_code": f["code"],
                    "field_type": self._amo_type(f),
                    "values": [value],
                }
            )
        return out or None

    def _field_map(self, et: str) -> dict:
        fields = self.dataset.fields[et]
        return self._cached(("fields", et, len(fields)), lambda: {f["id"]: f for f in fields})

    @staticmethod
    def _amo_type(f: dict) -> str:
        return f["type"]  # the neutral names are amoCRM's own (text, numeric, select)

    def _predefined(self, et: str) -> list[dict]:
        if et != "contact":
            return []
        return [
            {
                "id": PHONE_FIELD,
                "name": "Телефон",
                "code": "PHONE",
                "type": "multitext",
                "sort": 4,
                "predefined": True,
            },
            {
                "id": EMAIL_FIELD,
                "name": "Email",
                "code": "EMAIL",
                "type": "multitext",
                "sort": 6,
                "predefined": True,
            },
        ]

    def _field(self, f: dict, plural: str) -> dict:
        pre = bool(f.get("predefined"))
        enums = (
            [
                {"id": i, "value": v, "sort": 2 * i}
                for i, v in enumerate(("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER"), 1)
            ]
            if pre
            else [
                {"id": e["id"], "value": e["value"], "sort": 500 + i}
                for i, e in enumerate(f.get("enums") or ())
            ]
            or None
        )
        return {
            "id": f["id"],
            "name": f["name"],
            "type": self._amo_type(f),
            "account_id": ACCOUNT_ID,
            "code": f["code"],
            "sort": f.get("sort", 500),
            "is_api_only": bool(f.get("is_api_only")),
            "enums": enums,
            "group_id": None,
            "required_statuses": [],
            "is_deletable": not pre,
            "is_predefined": pre,
            "entity_type": plural,
            "remind": None,
            "_links": self._self(f"/api/v4/{plural}/custom_fields/{f['id']}"),
        }

    def _task(self, t: dict, with_: set) -> dict:
        return {
            "id": t["id"],
            "created_by": 0,
            "updated_by": 0,
            "created_at": t["created_at"],
            "updated_at": t["updated_at"],
            "responsible_user_id": t["responsible_user_id"],
            "group_id": 0,
            "entity_id": t["entity_id"],
            "entity_type": PLURAL.get(t["entity_type"]),
            "is_completed": bool(t["is_completed"]),
            "task_type_id": 1,
            "text": t["text"],
            "duration": 0,
            "complete_till": t["due_at"],
            "result": {"text": "Done"} if t["is_completed"] else [],
            "account_id": ACCOUNT_ID,
            "_links": self._self(f"/api/v4/tasks/{t['id']}"),
        }

    def _note(self, c: dict, plural: str) -> dict:
        if "channel" in c:
            return self._sms_note(c, plural)
        answered = c["status"] == "answered"
        return {
            "id": c["id"],
            "entity_id": c["entity_id"],
            "created_by": 0,
            "updated_by": 0,
            "created_at": c["started_at"],
            "updated_at": c["started_at"],
            "responsible_user_id": c["responsible_user_id"],
            "group_id": 0,
            "note_type": "call_" + c["direction"],
            "params": {
                "uniq": f"sbx-{c['id']}",
                "duration": c["duration_s"],
                "source": "Sandbox PBX",
                "link": f"https://pbx.example/rec/{c['id']}.mp3" if answered else "",
                "phone": c["phone"],
                "call_responsible": c["responsible_user_id"],
                "call_status": CALL_STATUS[outcome_of(c)],
            },
            "account_id": ACCOUNT_ID,
            "_links": self._self(f"/api/v4/{plural}/{c['entity_id']}/notes/{c['id']}"),
        }

    def _sms_note(self, a: dict, plural: str) -> dict:
        return {
            "id": a["id"],
            "entity_id": a["entity_id"],
            "created_by": a["responsible_user_id"] if a["direction"] == "out" else 0,
            "updated_by": 0,
            "created_at": a["at"],
            "updated_at": a["updated_at"],
            "responsible_user_id": a["responsible_user_id"],
            "group_id": 0,
            "note_type": "sms_" + a["direction"],
            "params": {"text": a["subject"], "phone": "+79990000000", "service": "Sandbox SMS"},
            "account_id": ACCOUNT_ID,
            "_links": self._self(f"/api/v4/{plural}/{a['entity_id']}/notes/{a['id']}"),
        }

    def _user(self, u: dict, with_: set) -> dict:
        return {
            "id": u["id"],
            "name": u["name"],
            "email": u["email"],
            "lang": "ru",
            "rights": {
                "is_admin": u is self.dataset.users[0],
                "is_free": False,
                "is_active": bool(u["is_active"]),
                "group_id": None,
                "role_id": None,
            },
            "_links": self._self(f"/api/v4/users/{u['id']}"),
        }

    # ---- events --------------------------------------------------------------------------
    def _event_rows(self) -> list[tuple]:
        """Stage changes (a deal's first is `lead_added`), deletions/restores, merges
        (`entity_merged` on the card `Dataset.merge` names: merged away or surviving) and task
        completions as amoCRM events.

        Also chat messages (live chat activities of deals, contacts, companies) and NPS
        answers (`nps_rate_added`). Rendered lazily; `seq` (unique, a multiple of 5 plus the
        source, `EVENT_KINDS`) breaks time ties.
        """
        ds, out = self.dataset, []
        kinds = {"deal": "lead", "contact": "contact", "company": "company", "task": "task"}
        for sc in ds.stage_changes:
            out.append(
                (
                    sc["changed_at"],
                    sc["id"] * 5,
                    "lead_status_changed" if sc["previous_stage_id"] else "lead_added",
                    "lead",
                    sc["deal_id"],
                    sc,
                )
            )
        for ev in ds.events:
            kind = kinds[ev["entity"]]
            if (kind, ev["type"]) == ("task", "restored"):
                continue  # amoCRM has no `task_restored` event type (see EVENT_TYPES)
            etype = "entity_merged" if ev["type"] == "merged" else f"{kind}_{ev['type']}"
            out.append((ev["at"], ev["id"] * 5 + 1, etype, kind, ev["entity_id"], ev))
        for t in ds.tasks:
            # Tasks in the trash keep their completion hidden here (real amoCRM may still
            # list it); a client must not invent task rows from these events anyway.
            if t["is_completed"] and t["completed_at"] and not t["is_deleted"]:
                out.append((t["completed_at"], t["id"] * 5 + 2, "task_completed", "task", t["id"], t))
        for a in ds.activities:
            if a["channel"] == "chat" and a["entity_type"] in kinds and not a["is_deleted"]:
                out.append(
                    (
                        a["at"],
                        a["id"] * 5 + 3,
                        CHAT_EVENTS[a["direction"]],
                        kinds[a["entity_type"]],
                        a["entity_id"],
                        a,
                    )
                )
        for n in ds.surveys:
            out.append(
                (n["at"], n["id"] * 5 + 4, "nps_rate_added", kinds[n["entity_type"]], n["entity_id"], n)
            )
        return out

    @staticmethod
    def _string_id(e: tuple) -> str:
        return _event_id(e[0], EVENT_KINDS[e[1] % 5], e[1] // 5)

    def _event_id_filter(self, spec):
        wanted = frozenset(strs(spec))
        return lambda e: self._string_id(e) in wanted

    def _event(self, e: tuple, with_: set) -> dict:
        created_at, _, etype, entity_type, entity_id, src = e
        before = after = []
        if etype == "lead_status_changed":
            prev_pipe = self.dataset.stage(src["previous_stage_id"])[0]["id"]
            before = [
                {"lead_status": {"id": self._status_id(src["previous_stage_id"]), "pipeline_id": prev_pipe}}
            ]
            after = [
                {"lead_status": {"id": self._status_id(src["stage_id"]), "pipeline_id": src["pipeline_id"]}}
            ]
        elif etype == "lead_added":
            # amoCRM's `lead_added` carries only a note id, not the stage the lead entered.
            after = [{"note": {"id": NOTE_ID_BASE + src["id"]}}]
        elif etype.endswith("_chat_message"):
            after = [{"message": {"id": f"sbx-msg-{src['id']}", "origin": "sandbox.chat"}}]
        elif etype == "nps_rate_added":
            # The documented shape: one object `nps` with the integer `rate`, 0-10.
            after = [{"nps": {"rate": int(src["score"])}}]
        plural = PLURAL.get({"lead": "deal"}.get(entity_type, entity_type), "tasks")
        eid = self._string_id(e)
        return {
            "id": eid,
            "type": etype,
            "entity_id": entity_id,
            "entity_type": entity_type,
            "created_by": _author(etype, src),
            "created_at": created_at,
            "value_after": after,
            "value_before": before,
            "account_id": ACCOUNT_ID,
            "_links": self._self(f"/api/v4/events/{eid}"),
            "_embedded": {"entity": self._ref(plural, entity_id)},
        }

    # ---- account, pipelines --------------------------------------------------------------
    def _account(self, req: Request) -> dict:
        ds = self.dataset
        with_ = set(req.get("with", "").split(","))
        out = {
            "id": ACCOUNT_ID,
            "name": "Sandbox",
            "subdomain": "sandbox",
            "created_at": ds.now - 3 * 365 * 86400,
            "created_by": 0,
            "updated_at": ds.now - 86400,
            "updated_by": 0,
            "current_user_id": ds.users[0]["id"],
            "country": "RU",
            "currency": "RUB",
            "currency_symbol": "₽",
            "customers_mode": self.customers_mode,
            "is_unsorted_on": True,
            "is_loss_reason_enabled": True,
            "is_helpbot_enabled": False,
            "is_technical_account": False,
            "contact_name_display_order": 1,
            "_links": self._self("/api/v4/account"),
        }
        emb = {}
        if "is_api_filter_enabled" in with_:
            out["is_api_filter_enabled"] = self.api_filter
        if "version" in with_:
            out["version"] = 42
        if "datetime_settings" in with_:
            emb["datetime_settings"] = {
                "date_pattern": "d.m.Y H:i",
                "short_date_pattern": "d.m.Y",
                "timezone": "Europe/Moscow",
                "timezone_offset": "+03:00",
            }
        if "task_types" in with_:
            emb["task_types"] = [
                {"id": 1, "name": "Связаться", "color": None, "icon_id": None, "code": "FOLLOW_UP"},
                {"id": 2, "name": "Встреча", "color": None, "icon_id": None, "code": "MEETING"},
            ]
        if "users_groups" in with_:
            emb["users_groups"] = [{"id": 0, "name": "Отдел продаж", "uuid": None}]
        if emb:
            out["_embedded"] = emb
        return out

    def _pipelines(self) -> Response:
        items = []
        for p in self.dataset.pipelines:
            pid = p["id"]
            statuses = [
                {
                    "id": pid * 1000 + 999,
                    "name": "Неразобранное",
                    "sort": 10,
                    "is_editable": False,
                    "pipeline_id": pid,
                    "color": "#c1c1c1",
                    "type": 1,
                    "account_id": ACCOUNT_ID,
                }
            ]
            for s in p["stages"]:
                sid = self._status_id(s["id"])
                statuses.append(
                    {
                        "id": sid,
                        "name": s["name"],
                        "sort": s["sort"] + 10,
                        "is_editable": sid not in (WON, LOST),
                        "pipeline_id": pid,
                        "color": "#99ccff",
                        "type": 0,
                        "account_id": ACCOUNT_ID,
                    }
                )
            for st in statuses:
                st["_links"] = self._self(f"/api/v4/leads/pipelines/{pid}/statuses/{st['id']}")
            items.append(
                {
                    "id": pid,
                    "name": p["name"],
                    "sort": p["sort"],
                    "is_main": bool(p["is_default"]),
                    "is_unsorted_on": True,
                    "is_archive": False,
                    "account_id": ACCOUNT_ID,
                    "_links": self._self(f"/api/v4/leads/pipelines/{pid}"),
                    "_embedded": {"statuses": statuses},
                }
            )
        return self._hal(
            {
                "_total_items": len(items),
                "_links": self._self("/api/v4/leads/pipelines"),
                "_embedded": {"pipelines": items},
            }
        )


def _tracking(d: dict) -> list | None:
    """A lead's tracking-data field `utm_source`, when it has one (else no custom values)."""
    if not d.get("utm_source"):
        return None
    return [
        {
            "field_id": UTM_SOURCE_FIELD,
            "field_name": "utm_source",
            "field_code": "UTM_SOURCE",
            "field_type": "tracking_data",
            "values": [{"value": d["utm_source"]}],
        }
    ]


def _author(etype: str, src: dict) -> int:
    """Who made the event: the manager for an outgoing message, else the system (0)."""
    return src["responsible_user_id"] if etype == "outgoing_chat_message" else 0


def _num_str(v) -> str:
    """Numbers as amoCRM returns them: strings, no trailing .0."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b36(n: int, width: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = _B36[r] + out
    return out.rjust(width, "0")


def _event_id(at: int, kind: str, n: int) -> str:
    """A 26-char string id like amoCRM's ("01pz58t6p04ymgsgfbmfyfy1mf"), time-ordered."""
    return "01" + _b36(at, 8) + kind + _b36(n * 7919 + 104_729, 15)
