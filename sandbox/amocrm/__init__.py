"""The fake amoCRM (Kommo) API v4: `AmoSandbox` and the won/lost status ids `WON`, `LOST`.

Parts: `server` (the server class: routes, limits, faults), `query` (list params, filters,
order, paging), `render` (dataset rows in amoCRM's v4 shapes), `write` (OAuth tokens and
Bearer checks, custom field creation, batch PATCH), `common` (constants, the error type,
problem+json replies), `webhooks` (the webhooks API and its deliveries, sent by
`sandbox.deliver`).
"""

from sandbox.amocrm.server import LOST, WON, AmoSandbox

__all__ = ["AmoSandbox", "WON", "LOST"]
