"""amoCRM webhook deliveries to `Change`s: pure parsing, no HTTP.

A delivery is `application/x-www-form-urlencoded`, the PHP-style array
`entity[action][n][field]=value` (amoCRM's webhook format page): entities `leads`, `contacts`,
`companies`, `task`; actions `add`, `update`, `delete`, `restore`, `status`, `responsible`. A
deletion carries the entity's id (`leads[delete][0][id]`; the page also describes it as the
bare id, `leads[delete][0]=ID`, which is read too). Companies come under `contacts`, told apart
by `[type]` = `company` (or `contact`); an item under `contacts` without a known type is
refused: read back as the wrong kind, a missing card would be marked deleted. The task example
nests its item one level deeper (`task[update][0][0][id]`): index levels are skipped. Other
entities (customers, unsorted, chats) and actions (notes) name nothing we mirror and are left
out; a delivery with nothing we mirror is refused.

A delivery must name this account: `account[id]` and `account[subdomain]`, each once, equal
to the account's (`GET /api/v4/account`); anything else is `HookRefused`. amoCRM signs
nothing, so the secret path of the URL the webhook was registered with and this check are
all that tell a genuine delivery; the payload's fields are never trusted, only its ids, and
the records are read back (`AmoCrmAdapter.read_changes`).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from adapters.hooks import Change, HookRefused

# What `install_hooks` subscribes to: every event that adds, changes, moves, deletes or
# restores a lead, contact, company or task (the webhooks API's list of events).
HOOK_EVENTS = tuple(
    [f"{a}_lead" for a in ("add", "update", "delete", "restore", "status", "responsible")]
    + [
        f"{a}_{e}"
        for e in ("contact", "company")
        for a in ("add", "update", "delete", "restore", "responsible")
    ]
    + [f"{a}_task" for a in ("add", "update", "delete", "responsible")]
)

TABLES = {"leads": "deals", "companies": "companies", "task": "tasks", "tasks": "tasks"}
CARD_TYPES = {"contact": "contacts", "company": "companies"}
ACTIONS = {"add", "update", "delete", "restore", "status", "responsible"}
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


def parse_delivery(pairs: list[tuple[str, str]], account_id: int, subdomain: str) -> list[Change]:
    """The changes a delivery names, each (table, id) once, in the order first named; a
    change is `deleted` when any action for it was a deletion. `HookRefused` when it is not
    a delivery for the account `account_id` / `subdomain`, or names nothing we mirror."""
    check_account(pairs, account_id, subdomain)
    items: dict[tuple, dict] = {}
    for key, value in pairs:
        path = split_key(key)
        if not path or len(path) < 2 or path[1] not in ACTIONS:
            continue
        entity, action = path[0], path[1]
        if entity not in TABLES and entity != "contacts":
            continue
        n = 2
        while n < len(path) and path[n].isdigit():
            n += 1
        where = (entity, action, tuple(path[2:n]))
        field, deeper = (path[n] if n < len(path) else None), path[n + 1 :]
        if deeper:
            continue  # a nested field: custom_fields, linked leads...
        item = items.setdefault(where, {})
        if field == "id" or (field is None and action == "delete"):
            item.setdefault("id", []).append(value)
        elif field == "type":
            item.setdefault("type", []).append(value)
    changes: dict[tuple, bool] = {}
    for (entity, action, index), item in items.items():
        name = f"{entity}[{action}]{''.join(f'[{i}]' for i in index)}"
        if "id" not in item:
            raise HookRefused(f"amoCRM webhook: {name} has no id")
        table = _table(entity, item, name)
        for raw in _one(item["id"], f"{name}[id]"):
            ident = _id(raw, f"{name}[id]")
            changes[(table, ident)] = changes.get((table, ident), False) or action == "delete"
    if not changes:
        raise HookRefused("amoCRM webhook: the delivery names no lead, contact, company or task change")
    return [Change(table, ident, deleted) for (table, ident), deleted in changes.items()]


def check_account(pairs: list[tuple[str, str]], account_id: int, subdomain: str) -> None:
    """`HookRefused` unless `account[id]` and `account[subdomain]` name this account."""
    ids = [v for k, v in pairs if k == "account[id]"]
    if not ids:
        raise HookRefused("amoCRM webhook: no account[id] in the delivery")
    got = _one(ids, "account[id]")[0].strip()
    if got != str(account_id):
        shown = got if got.isdigit() and len(got) <= 20 else "not an account id"
        raise HookRefused(
            f"amoCRM webhook for another account: account[id] {shown}, this source's is {account_id}"
        )
    subs = [v for k, v in pairs if k == "account[subdomain]"]
    if not subs:
        raise HookRefused("amoCRM webhook: no account[subdomain] in the delivery")
    sub = _one(subs, "account[subdomain]")[0].strip().lower()
    if sub != subdomain.strip().lower():
        shown = sub if re.fullmatch(r"[a-z0-9-]{1,63}", sub) else "not a subdomain"
        raise HookRefused(
            f"amoCRM webhook for another account: account[subdomain] {shown}, this source's is {subdomain}"
        )


def split_key(key: str) -> list[str] | None:
    """`leads[update][0][id]` -> ["leads", "update", "0", "id"]; None when not of that form."""
    base, bracket, rest = key.partition("[")
    if not base:
        return None
    if not bracket:
        return [base]
    rest = "[" + rest
    segments = _SEGMENT.findall(rest)
    if "".join(f"[{s}]" for s in segments) != rest:
        return None
    return [base, *segments]


def _table(entity: str, item: dict, name: str) -> str:
    if entity != "contacts":
        return TABLES[entity]
    kinds = item.get("type")
    if not kinds:
        raise HookRefused(f"amoCRM webhook: {name} has no type (contact or company)")
    kind = _one(kinds, f"{name}[type]")[0].strip().lower()
    if kind not in CARD_TYPES:
        raise HookRefused(f"amoCRM webhook: {name}[type] is neither contact nor company")
    return CARD_TYPES[kind]


def _one(values: list[str], name: str) -> list[str]:
    if len(set(values)) > 1:
        raise HookRefused(f"amoCRM webhook: {name} given {len(values)} different values")
    return values[:1]


def _id(raw: str, name: str) -> int:
    text = raw.strip()
    if not text.isdigit() or len(text) > 18 or int(text) == 0:
        raise HookRefused(f"amoCRM webhook: {name} is not an id")
    return int(text)


def where_to(url: str) -> str:
    """A webhook URL without its secret: scheme, host and port, the path elided."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "an unreadable URL"
    return f"{parts.scheme}://{parts.hostname or '?'}{port}/…"
