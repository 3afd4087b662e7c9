"""Every CRM the connector speaks, by `kind`. A new CRM is one folder and one line here."""

from __future__ import annotations

from adapters import amocrm, bitrix24
from adapters.crm import Crm

CRMS: dict[str, Crm] = {
    c.kind: c
    for c in (
        amocrm.CRM,
        bitrix24.CRM,
    )
}


def kinds() -> list[str]:
    return list(CRMS)


def get(kind: str) -> Crm:
    """The CRM for a `kind`; KeyError names the known ones."""
    try:
        return CRMS[kind]
    except KeyError:
        raise KeyError(f"unknown CRM kind '{kind}' (known: {', '.join(CRMS)})") from None
