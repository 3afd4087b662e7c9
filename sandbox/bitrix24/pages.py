"""List pages for the Bitrix24 sandbox: each row rendered and JSON-encoded once, reused
until the data behind it changes.

A 50-command batch of `*` + `UF_*` deal pages is 2,500 rows and ~1.3 MB of JSON; rendering
and encoding them on every request was most of the server's time. `PageCache` keeps each
row's encoded JSON per (entity, select), valid while the dataset's per-table version
counters stay the same (every mutation goes through a `Dataset` method, which bumps them).
A `Page` carries the encoded rows to `dumps`, which splices them into the response body
byte for byte as `json.dumps` would have written them; `$result[...]` references still read
rows through `page[i]`.
"""

from __future__ import annotations

import json
import re
import secrets
from json.encoder import encode_basestring as _jstr

from .query import compiled, render
from .render import fmt_dt, to_old

# Tables whose changes can alter an entity's rendered rows (a deal shows MOVED_TIME,
# read from stage changes).
DEPENDS = {
    "deal": ("deals", "stage_changes"),
    "lead": ("leads",),
    "contact": ("contacts",),
    "company": ("companies",),
    "task": ("tasks",),
    "call": ("calls",),
    "activity": ("calls", "activities"),
    "user": ("users",),
    "stagehistory_deal": ("stage_changes",),
    "stagehistory_lead": ("leads",),
}
MAX_ROWS = 250_000  # encoded rows kept over all entities before starting afresh

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_NONCE = secrets.token_hex(8)
_MARK = re.compile(r'"\\u0000' + _NONCE + r':(\d+)\\u0000"')


class Page:
    """One list page as its rows' encoded JSON; `page[i]` decodes a row (for `$result`)."""

    __slots__ = ("encoded",)

    def __init__(self, encoded: list[bytes]):
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> dict:
        # Decoded, not re-rendered: a later sub-call of the same batch may change the row.
        return json.loads(self.encoded[i])

    def dicts(self) -> list[dict]:
        return [json.loads(b) for b in self.encoded]


class PageCache:
    """Encoded rows per entity and select. Call under the dataset's lock."""

    def __init__(self, ds, max_rows: int = MAX_ROWS):
        self.ds, self.max_rows = ds, max_rows
        self._entities: dict[str, tuple[tuple, dict]] = {}
        self._rows = 0
        self.misses = 0  # rows rendered, for tests and benchmarks

    def clear(self) -> None:
        """Forget every encoded row (benchmarks use it to measure first reads)."""
        self._entities, self._rows = {}, 0

    def page(self, entity: str, rows: list[dict], fields: list[tuple], typed: bool) -> Page:
        ds = self.ds
        valid = (
            tuple(ds.versions[t] for t in DEPENDS[entity]),
            len(ds.fields.get(entity, ())),
        )  # contact/company columns grow with fields
        hit = self._entities.get(entity)
        if hit is None or hit[0] != valid:
            hit = self._entities[entity] = (valid, {})
        # Field objects are pinned by the entity's spec, which only changes with `valid`.
        sig = (typed, tuple((k, id(f)) for k, f in fields))
        done = hit[1].get(sig)
        if done is None:
            done = hit[1][sig] = {}
        out = [done.get(r["id"]) for r in rows]
        missing = [i for i, b in enumerate(out) if b is None]
        if missing:
            for i, b in zip(missing, encode_rows([rows[i] for i in missing], fields, typed)):
                out[i] = done[rows[i]["id"]] = b
            self.misses += len(missing)
            self._rows += len(missing)
            if self._rows > self.max_rows:  # a bound on memory, not an LRU: rare and cheap
                self.clear()
        return Page(out)


_ENCODERS: dict[tuple, tuple] = {}


def encode_rows(rows: list[dict], fields: list[tuple], typed: bool = False) -> list[bytes]:
    """Each row as `render` would return it, JSON-encoded, without building the dicts.

    Same bytes as `json.dumps(d, ensure_ascii=False, separators=(",", ":"))`; the encoder
    is generated per select (like `render`), which halves the cost of a first read.
    """
    keys = [k for k, _ in fields]
    if len(set(keys)) != len(keys) or not all(type(k) is str for k in keys):
        # A dict keeps the last of a repeated key, and json.dumps spells non-str keys.
        return [_ENCODE(d).encode() for d in render(rows, fields, typed)]
    return compiled(_ENCODERS, _compile_encoder, fields, typed)(rows)


def _value(x) -> str:
    return _jstr(x) if type(x) is str else _ENCODE(x)


def _compile_encoder(fields: list[tuple], typed: bool):
    env = {
        "_s": _jstr,
        "_v": _value,
        "_dt": fmt_dt,
        "_MONEY": '"%.2f"',
        "_INT": '"%d"',
        "_float": lambda v: to_old("float", v),
    }
    parts, seen = [], {}
    for i, (k, f) in enumerate(fields):
        env[f"g{i}"] = f.get
        env[f"k{i}"] = ("{" if i == 0 else ",") + _jstr(k) + ":"
        if f.key and (f.key, f.kind) in seen:  # BEGINDATE and DATE_CREATE: one column
            parts.append(f"k{i}, {seen[f.key, f.kind]}")
            continue
        v = f"r[{f.key!r}]" if f.key else f"g{i}(r)"
        if f.kind == "date":
            expr = f"('null' if (x{i} := {v}) is None else '\"' + _dt(x{i}) + '\"')"
        elif typed or f.kind not in ("int", "money", "float"):
            expr = f"(_s(x{i}) if type(x{i} := {v}) is str else _v(x{i}))"
        elif f.kind == "int":
            expr = (
                f"('null' if (x{i} := {v}) is None else _INT % x{i} if type(x{i}) is int else _s(str(x{i})))"
            )
        elif f.kind == "money":
            expr = f"('null' if (x{i} := {v}) is None else _MONEY % x{i})"
        else:
            expr = f"_v(_float({v}))"
        if f.key:
            seen[f.key, f.kind] = f"e{i}"
            expr = f"(e{i} := {expr})"
        parts.append(f"k{i}, {expr}")
    src = "def _encode(rows):\n    return [''.join((" + ", ".join(parts) + ", '}')).encode() for r in rows]\n"
    exec(compile(src, "<bitrix24-encode>", "exec"), env)  # noqa: S102 - our own field table
    return env["_encode"]


def dumps(obj) -> bytes:
    """`json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()`, with `Page`s
    written as JSON arrays of their pre-encoded rows."""
    pages: list[Page] = []

    def mark(o):
        if isinstance(o, Page):
            pages.append(o)
            return f"\x00{_NONCE}:{len(pages) - 1}\x00"
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=mark).encode(obj)
    if not pages:
        return text.encode()
    parts = _MARK.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(b"[" + b",".join(pages[int(part)].encoded) + b"]")
        else:
            out.append(part.encode())
    return b"".join(out)


def plain(obj):
    """`obj` with every `Page` turned into its list of dicts (for a whole-result reference)."""
    if isinstance(obj, Page):
        return obj.dicts()
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj
