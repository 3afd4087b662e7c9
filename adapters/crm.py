"""What a CRM brings to the connector: one `Crm` object per CRM folder, listed in the registry.

Everything outside `adapters/<crm>/` reaches a CRM through this object, found by the source's
`kind`: config validation, adapter construction, the `sandbox` / `demo` commands and
write-back. Nothing outside a CRM's folder names a CRM.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from adapters.base import CrmField
from adapters.streams import narrowed


@dataclass(frozen=True)
class Crm:
    """One CRM, as the rest of the connector sees it.

    kind: the `kind` users write in `[[sources]]`. title: how messages name it.
    keys: the config keys this CRM takes beside the common ones, with their TOML types; a key
    only other CRMs take is rejected naming them. secret_keys: those to redact.
    check: `check(key, values, fail)` validates and normalises a source's values in place
    (`fail(key, problem)` returns the ConfigError to raise); common keys are checked before.
    defaults: values for keys left out, its own or common ones (`requests_per_second`).
    adapter: "module:attr" of `make(source, tokens, limits=None) -> Adapter`, imported on first
    use (`limits`: an `adapters.limits.Limits` backend, passed only when one is given).
    sandbox: "module:attr" of the fake CRM server class (started by `sandbox` and `demo`).
    sandbox_source: the `[[sources]]` keys that point a source at a running fake.
    field_has_code: whether an existing custom field carries a KPI field code.
    card_value: `card_value(raw, key)`, the value a mirrored card (its `raw` JSON, parsed) holds
    in the custom field with that key (`CrmField.key`), or None: survey scores kept on cards.
    streams: "module:attr" of the CRM's stream declarations (each has a `name`), imported only
    when first asked for (config validation of `streams = [...]`, KPI input checks).
    """

    kind: str
    title: str
    keys: dict[str, type | tuple]
    check: Callable
    adapter: str
    sandbox: str
    sandbox_source: Callable[[object], dict]
    secret_keys: tuple[str, ...] = ()
    defaults: dict = field(default_factory=dict)
    field_has_code: Callable[[CrmField, str], bool] = lambda f, code: f.code == code or f.key == code
    streams: str = ""
    card_value: Callable[[dict, str], object] = lambda raw, key: raw.get(key)

    def make_adapter(self, source, tokens, limits=None):
        """The adapter for one source (its modules are imported only now). `limits`: where
        its API limits live (`adapters.limits.Limits`); None keeps them in this process."""
        if limits is None:
            return _load(self.adapter)(source, tokens)
        return _load(self.adapter)(source, tokens, limits=limits)

    def stream_names(self, wanted=None) -> tuple[str, ...]:
        """The names of `declarations(wanted)`; without `wanted`, every name a source's
        `streams = [...]` may list, in declaration order."""
        return tuple(s.name for s in self.declarations(wanted))

    def declarations(self, wanted=None) -> list:
        """The stream declarations in run order, narrowed to `wanted` (a source's `streams`):
        the one way to a source's streams (its adapter's `streams()` asks here)."""
        return narrowed(_load(self.streams), wanted) if self.streams else []

    def sandbox_class(self):
        return _load(self.sandbox)


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
