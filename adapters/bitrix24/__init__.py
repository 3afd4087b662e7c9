"""Bitrix24: the REST API of a portal, through an incoming webhook or an OAuth app."""

from adapters.bitrix24 import config
from adapters.crm import Crm

CRM = Crm(
    kind="bitrix24",
    title="Bitrix24",
    keys=config.KEYS,
    check=config.check,
    secret_keys=config.SECRET_KEYS,
    defaults=config.DEFAULTS,
    adapter="adapters.bitrix24.adapter:Bitrix24Adapter",
    sandbox="sandbox.bitrix24:Bitrix24Sandbox",
    streams="adapters.bitrix24.streams:STREAMS",
    sandbox_source=config.sandbox_source,
    field_has_code=config.field_has_code,
)
