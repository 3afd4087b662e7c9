"""amoCRM (Kommo): the REST API v4 at https://SUBDOMAIN.amocrm.ru (or .kommo.com)."""

from adapters.amocrm import config, fields
from adapters.crm import Crm

CRM = Crm(
    kind="amocrm",
    title="amoCRM",
    keys=config.KEYS,
    check=config.check,
    secret_keys=config.SECRET_KEYS,
    defaults=config.DEFAULTS,
    adapter="adapters.amocrm.adapter:AmoCrmAdapter",
    sandbox="sandbox.amocrm:AmoSandbox",
    streams="adapters.amocrm.streams:STREAMS",
    sandbox_source=config.sandbox_source,
    card_value=fields.card_value,
)
