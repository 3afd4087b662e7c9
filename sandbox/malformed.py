"""Malformed payloads the sandboxes can serve: the kinds of bad item a real account produces
(a field an admin typed by hand, a module that writes its own format, an API that sends a PHP
array where an object belongs), 23 per CRM.

    server.malform("amount_units", deal_id)      # that deal is listed changed from now on

Each kind names the entity it applies to (the sandbox's own listing name) and how the item,
as rendered, is changed; the dataset itself is untouched, so a test can compare the mirror
with the true values and see that nothing was stored as something else. Where a kind
re-spells a value (units, locale separators) it spells the item's own value, so a correct
reading equals the dataset. Imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Kind:
    entity: str  # Bitrix24: deal, lead, contact, ...; amoCRM: leads, notes, ...
    change: Callable[[dict], object]  # the rendered item -> what is served instead
    what: str


def _set(key: str, value) -> Callable[[dict], dict]:
    return lambda r: {**r, key: value}


def _respell(key: str, spell: Callable[[float], str]) -> Callable[[dict], dict]:
    """The item's own number at `key`, written another way."""
    return lambda r: {**r, key: spell(float(r[key]))} if r.get(key) is not None else r


def rub_comma(x: float) -> str:  # "12,50 руб"
    return f"{x:.2f}".replace(".", ",") + " руб"


def spaced(x: float) -> str:  # "1 234,50"
    return f"{x:,.2f}".replace(",", " ").replace(".", ",")


def grouped(x: float) -> str:  # "1,234.50"
    return f"{x:,.2f}"


def _only(*keys: str) -> Callable[[dict], dict]:
    return lambda r: {k: r[k] for k in keys if k in r}


def _nested(path: tuple[str, ...], value) -> Callable[[dict], dict]:
    def change(r: dict) -> dict:
        out = dict(r)
        inner = out
        for key in path[:-1]:
            inner[key] = dict(inner.get(key) or {})
            inner = inner[key]
        inner[path[-1]] = value
        return out

    return change


def _stage(r: dict) -> dict:
    """A stage code its pipeline does not have, in the pipeline's own spelling."""
    cat = str(r.get("CATEGORY_ID") or "0")
    return {**r, "STAGE_ID": "NOPE" if cat == "0" else f"C{cat}:NOPE"}


BITRIX24: dict[str, Kind] = {
    "amount_units": Kind("deal", _respell("OPPORTUNITY", rub_comma), "OPPORTUNITY '12,50 руб'"),
    "amount_spaced": Kind("deal", _respell("OPPORTUNITY", spaced), "OPPORTUNITY '1 234,50'"),
    "amount_grouped": Kind("lead", _respell("OPPORTUNITY", grouped), "OPPORTUNITY '1,234.50'"),
    "amount_ambiguous": Kind("deal", _set("OPPORTUNITY", "1,234"), "thousands or decimals?"),
    "amount_overflow": Kind("deal", _set("OPPORTUNITY", "1e400"), "a number past float range"),
    "amount_nan": Kind("lead", _set("OPPORTUNITY", "nan"), "not a number, spelled as one"),
    "amount_list": Kind("deal", _set("OPPORTUNITY", ["100.00"]), "a list where a number is"),
    "date_junk": Kind("deal", _set("DATE_CREATE", "31.02.2026 25:61"), "an impossible date"),
    "date_number": Kind("contact", _set("DATE_CREATE", 1700000000), "unix seconds, not ISO"),
    "only_id": Kind("deal", _only("ID"), "a deal carrying only its id"),
    "unknown_stage": Kind("deal", _stage, "a stage code the pipeline does not have"),
    "unknown_semantics": Kind("lead", _set("STATUS_SEMANTIC_ID", "X"), "an undocumented semantics"),
    "id_junk": Kind("company", _set("ID", "abc"), "an id that is not a number"),
    "id_huge": Kind("deal", _set("ID", "99999999999999999999"), "an id past 64-bit integers"),
    "id_negative": Kind("contact", _set("ID", "-7"), "a negative id"),
    "reference_junk": Kind("deal", _set("ASSIGNED_BY_ID", "bob"), "a user id that is a name"),
    "title_object": Kind("company", _set("TITLE", {"ru": "ООО Ромашка"}), "an object where text is"),
    "not_an_object": Kind("contact", lambda r: "<br>garbage", "a string where an item is"),
    "contact_ids_dict": Kind(
        "deal",
        lambda r: {**r, "contactIds": {"0": 5}} if "contactIds" in r else r,
        "PHP array as an object (crm.item.list)",
    ),
    "deadline_junk": Kind("task", _set("deadline", "soon"), "a task deadline that is a word"),
    "responsible_junk": Kind("task", _set("responsibleId", {"id": "1"}), "an object where an id is"),
    "duration_unit": Kind("call", _set("CALL_DURATION", "12 мин"), "a duration with a unit"),
    "history_no_stage": Kind(
        "stagehistory_deal", _only("ID", "OWNER_ID", "TYPE_ID"), "a stage change without its stage"
    ),
}

AMOCRM: dict[str, Kind] = {
    "price_units": Kind("leads", _respell("price", rub_comma), "price '12,50 руб'"),
    "price_spaced": Kind("leads", _respell("price", spaced), "price '1 234,50'"),
    "price_grouped": Kind("leads", _respell("price", grouped), "price '1,234.50'"),
    "price_ambiguous": Kind("leads", _set("price", "1,234"), "thousands or decimals?"),
    "price_overflow": Kind("leads", _set("price", float("inf")), "1e400: past float range"),
    "price_nan": Kind("leads", _set("price", float("nan")), "NaN"),
    "price_object": Kind("leads", _set("price", {"value": 5}), "an object where a number is"),
    "date_junk": Kind("leads", _set("created_at", "yesterday"), "a word where unix seconds are"),
    "date_overflow": Kind("contacts", _set("created_at", 10**20), "seconds past year 9999"),
    "only_id": Kind("leads", _only("id", "updated_at"), "a lead carrying only its id and time"),
    "unknown_stage": Kind("leads", _set("status_id", 999999), "a status its pipeline lacks"),
    "stage_text": Kind("leads", _set("status_id", "won"), "a status that is a word"),
    "id_junk": Kind("companies", _set("id", "abc"), "an id that is not a number"),
    "id_huge": Kind("leads", _set("id", 10**20), "an id past 64-bit integers"),
    "id_negative": Kind("contacts", _set("id", -7), "a negative id"),
    "reference_junk": Kind("leads", _set("responsible_user_id", "bob"), "a user id that is a name"),
    "name_object": Kind("companies", _set("name", {"ru": "ООО Ромашка"}), "an object where text is"),
    "not_an_object": Kind("contacts", lambda r: "<br>garbage", "a string where an item is"),
    "contacts_php_dict": Kind(
        "leads",
        lambda r: _nested(
            ("_embedded", "contacts"),
            {str(i): c for i, c in enumerate((r.get("_embedded") or {}).get("contacts") or [{"id": 1}])},
        )(r),
        "a PHP array serialised as an object where a list is",
    ),
    "due_junk": Kind("tasks", _set("complete_till", "tomorrow"), "a word where unix seconds are"),
    "params_string": Kind("notes", _set("params", "duration=5"), "a string where an object is"),
    "duration_unit": Kind(
        "notes", lambda r: _nested(("params", "duration"), "5 min")(r), "a duration with a unit"
    ),
    "entity_junk": Kind("notes", _set("entity_id", "lead-5"), "a card id that is text"),
}


class Malformer:
    """The knob both sandboxes share: (entity, item id) -> kind, applied as items are served."""

    def __init__(self, kinds: dict[str, Kind]):
        self.kinds = kinds
        self.chosen: dict[tuple[str, int], Kind] = {}
        self.repeated: set[tuple[str, int]] = set()

    def add(self, kind: str, item_id: int) -> None:
        k = self.kinds[kind]
        self.chosen[(k.entity, int(item_id))] = k

    def repeat_id(self, entity: str, item_id: int) -> None:
        """Serve the item `item_id` under the id of the item before it on its page (a page that
        carries one id twice, the second time with another item's data)."""
        self.repeated.add((entity, int(item_id)))

    def __bool__(self) -> bool:
        return bool(self.chosen or self.repeated)

    def serve(self, entity: str, item_id, item: dict):
        """The item as served: changed when a kind was chosen for it."""
        try:
            k = self.chosen.get((entity, int(item_id)))
        except (TypeError, ValueError):  # amoCRM event ids are text: never chosen
            return item
        return k.change(item) if k else item

    def serve_page(self, entity: str, ids: list, items: list) -> list:
        """A page's items as served: each as `serve` gives it, and those `repeat_id` names
        under the id of the item before them."""
        out = [self.serve(entity, i, item) for i, item in zip(ids, items)]
        for n in range(1, len(out)):
            try:
                repeat = (entity, int(ids[n])) in self.repeated
            except (TypeError, ValueError):
                continue
            before, this = out[n - 1], out[n]
            if repeat and isinstance(before, dict) and isinstance(this, dict):
                key = "ID" if "ID" in this else "id"
                out[n] = {**this, key: before.get(key)}
        return out
