"""Request parameters the way Bitrix24 (PHP) reads them.

PHP turns `filter[>ID]=5&select[]=ID&select[]=TITLE` into nested arrays; Bitrix24 clients
rely on that in GET queries, form bodies and batch `cmd` strings alike, so one parser serves
all three. JSON bodies arrive already nested and are merged over the query.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_query(text: str) -> dict:
    """`a[b][]=1&c=2` -> {"a": {"b": ["1"]}, "c": "2"}; all leaf values stay strings."""
    out: dict = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        m = _KEY.match(key)
        if not m:
            out[key] = value
            continue
        parts = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        _assign(out, parts, value)
    return _listify(out)


def _assign(node: dict, parts: list[str], value: str) -> None:
    for part in parts[:-1]:
        if part == "":  # `a[][b]=1`: PHP appends a new element
            part = str(_next_index(node))
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    last = parts[-1]
    if last == "":
        last = str(_next_index(node))
    node[last] = value


def _next_index(node: dict) -> int:
    ints = [int(k) for k in node if k.isdigit()]
    return max(ints) + 1 if ints else 0


def _listify(node):
    """Dicts keyed 0..n-1 become lists, as PHP's json_encode would render them."""
    if not isinstance(node, dict):
        return node
    node = {k: _listify(v) for k, v in node.items()}
    if node and all(k.isdigit() for k in node) and sorted(int(k) for k in node) == list(range(len(node))):
        return [node[str(i)] for i in range(len(node))]
    return node


def parse_body(content_type: str, body: bytes) -> dict:
    """Decode a POST body (JSON or form-encoded); raises ValueError on malformed JSON."""
    if not body:
        return {}
    if "json" in (content_type or ""):
        data = json.loads(body.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("JSON body must be an object")
        return data
    return parse_query(body.decode("utf-8"))


def ci_get(params: dict, name: str, default=None):
    """Bitrix24 parameter names are case-insensitive (`filter` / `FILTER`)."""
    if name in params:
        return params[name]
    low = name.lower()
    for k, v in params.items():
        if k.lower() == low:
            return v
    return default
