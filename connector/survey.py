"""Survey scores kept in card fields the admin names (`[kpi.survey]`): NPS 0-10, CSAT 1-5.

`resolve_keys` asks the CRM (through the adapter) which field keys carry those names;
`card_scores` then reads the scores from the mirrored cards' `raw` JSON (no HTTP); `load` puts
them in `temp.kpi_card_survey` for the KPI and metrics queries. A card's score counts as an
answer given at the card's `updated_at` (a card field keeps no date of its own).
"""

from __future__ import annotations

import json
import logging

from adapters import registry
from connector.kpi_prep import CARD_SURVEY_DDL

log = logging.getLogger(__name__)

SCALES = {"nps": (0.0, 10.0), "csat": (1.0, 5.0)}
CARD_TABLES = {"contact": "contacts", "company": "companies"}


def resolve_keys(adapter, survey_cfg, targets) -> dict[str, dict[str, str]]:
    """entity type -> {kind: field key} for the configured fields that exist on its cards."""
    wanted = survey_cfg.fields()
    if not wanted or adapter is None:
        return {}
    out: dict[str, dict[str, str]] = {}
    for entity_type in targets:
        fields = {f.name: f.key for f in adapter.list_fields(entity_type)}
        found = {kind: fields[name] for kind, name in wanted.items() if name in fields}
        for kind, name in wanted.items():
            if name not in fields:
                log.warning("[kpi.survey] %s_field: no %s field named '%s'", kind, entity_type, name)
        if found:
            out[entity_type] = found
    return out


def score(value, kind: str) -> float | None:
    """The value as a score on the kind's scale, or None (empty, not a number, off the scale)."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    try:
        v = float(str(value).strip().replace(",", "."))
    except (TypeError, ValueError):
        return None
    lo, hi = SCALES[kind]
    return v if lo <= v <= hi else None


def card_scores(conn, source: str, crm_kind: str, keys: dict[str, dict[str, str]]) -> list[tuple]:
    """(entity_type, entity_id, kind, score, at) for every live card holding a score."""
    value_of = registry.get(crm_kind).card_value
    out, skipped = [], 0
    for entity_type, by_kind in keys.items():
        rows = conn.execute(f"SELECT id, updated_at, raw FROM {CARD_TABLES[entity_type]} "
                            "WHERE source = ? AND is_deleted = 0 AND raw IS NOT NULL", (source,))
        for entity_id, at, raw in rows:
            card = json.loads(raw)
            for kind, key in by_kind.items():
                value = value_of(card, key)
                if value in (None, "", []):
                    continue
                s = score(value, kind)
                if s is None:
                    skipped += 1
                else:
                    out.append((entity_type, entity_id, kind, s, at))
    if skipped:
        log.warning("source '%s': %d survey field values are not scores on their scale, left out",
                    source, skipped)
    return out


def load(conn, rows) -> None:
    """(Re)fill `temp.kpi_card_survey` with `card_scores` rows."""
    conn.execute("DROP TABLE IF EXISTS temp.kpi_card_survey")
    conn.execute(CARD_SURVEY_DDL)
    conn.executemany("INSERT INTO temp.kpi_card_survey VALUES (?, ?, ?, ?, ?)", rows)
