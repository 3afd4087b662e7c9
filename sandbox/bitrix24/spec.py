"""How the Bitrix24 sandbox describes a list's fields: a `Field` per field (its names in old
and typed methods, how to read it from a dataset row, its kind) and a `Spec` per entity."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Field:
    old: str | None  # UPPER name in old methods; None = not in old methods
    new: str | None  # camelCase name; None = not in typed methods
    get: Callable[[dict], object] | str  # a getter, or a dataset key read as r[key]
    kind: str = "int"  # int | money | str | date | yn | list | bool | float
    explicit: bool = False  # only when named in select (multi-fields)
    key: str | None = None

    def __post_init__(self):
        if isinstance(self.get, str):  # plain keys let the renderer inline the read
            self.key = self.get
            self.get = operator.itemgetter(self.key)


@dataclass
class Spec:
    fields: list[Field]
    by_old: dict[str, Field] = field(default_factory=dict)
    by_new: dict[str, Field] = field(default_factory=dict)

    def __post_init__(self):
        self.by_old = {f.old: f for f in self.fields if f.old}
        self.by_new = {f.new: f for f in self.fields if f.new}
