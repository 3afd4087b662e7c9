"""Survey scores kept in card fields the admin names (`[kpi.survey]`): NPS 0-10, CSAT 1-5.

`find_keys` asks the CRM (through the adapter) which field keys carry those names, only for
fields not found before: found keys are remembered in `kpi_fields` (kpi `survey:nps`,
`survey:csat`; `cached_keys` / `save_keys`), so a nightly run and a dry run send nothing.
`card_scores` then reads the scores from the mirrored cards' `raw` JSON; `load` puts them in
`temp.kpi_card_survey` for the KPI and metrics queries. A card's score counts as an answer given
at the card's `updated_at` (a card field keeps no date of its own).
"""

from __future__ import annotations

import json
import logging

from adapters import registry
from adapters.times import iso
from connector.kpi.prep import CARD_SURVEY_DDL

log = logging.getLogger(__name__)

SCALES = {"nps": (0.0, 10.0), "csat": (1.0, 5.0)}
CARD_TABLES = {"contact": "contacts", "company": "companies"}


PREFIX = "survey:"


def cached_keys(mirror, source: str, survey_cfg) -> dict[str, dict[str, str]]:
    """entity type -> {kind: field key} found before under the configured field names."""
    wanted = survey_cfg.fields()
    out: dict[str, dict[str, str]] = {}
    for entity_type, kpi, label, key in mirror.conn.execute(
        "SELECT entity_type, kpi, label, field_key FROM kpi_fields WHERE source = ? AND kpi LIKE ?",
        (source, PREFIX + "%"),
    ):
        kind = kpi[len(PREFIX) :]
        if wanted.get(kind) == label:
            out.setdefault(entity_type, {})[kind] = key
    return out


def missing(survey_cfg, targets, cached: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """entity type -> {kind: field name} still to look up in the CRM."""
    wanted = survey_cfg.fields()
    out = {t: {k: n for k, n in wanted.items() if k not in cached.get(t, {})} for t in targets}
    return {t: names for t, names in out.items() if names}


def find_keys(adapter, wanted: dict[str, dict[str, str]]) -> dict[str, dict[str, object]]:
    """entity type -> {kind: CrmField} for the field names the CRM has (one listing per type)."""
    out: dict[str, dict[str, object]] = {}
    for entity_type, names in wanted.items():
        fields = {f.name: f for f in adapter.list_fields(entity_type)}
        for kind, name in names.items():
            if name in fields:
                out.setdefault(entity_type, {})[kind] = fields[name]
            else:
                log.warning("[kpi.survey] %s_field: no %s field named '%s'", kind, entity_type, name)
    return out


def save_keys(mirror, source: str, found: dict[str, dict[str, object]]) -> None:
    """Remember the fields found (in `kpi_fields`, beside the KPI fields)."""
    with mirror.db.atomic():
        for entity_type, by_kind in found.items():
            for kind, f in by_kind.items():
                mirror.conn.execute(
                    "INSERT OR REPLACE INTO kpi_fields (source, entity_type, kpi, label, field_key, code, "
                    "type, resolved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (source, entity_type, PREFIX + kind, f.name, f.key, f.code, f.type, iso()),
                )


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
        rows = conn.execute(
            f"SELECT id, updated_at, raw FROM {CARD_TABLES[entity_type]} "
            "WHERE source = ? AND is_deleted = 0 AND raw IS NOT NULL",
            (source,),
        )
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
        log.warning(
            "source '%s': %d survey field values are not scores on their scale, left out", source, skipped
        )
    return out


def load(conn, rows) -> None:
    """(Re)fill `temp.kpi_card_survey` with `card_scores` rows."""
    conn.execute("DROP TABLE IF EXISTS temp.kpi_card_survey")
    conn.execute(CARD_SURVEY_DDL)
    conn.executemany("INSERT INTO temp.kpi_card_survey VALUES (?, ?, ?, ?, ?)", rows)
