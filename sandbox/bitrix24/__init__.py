"""The fake Bitrix24 portal: `Bitrix24Sandbox`.

Parts: `server` (the server class: webhook and OAuth routing, `batch`, limits), `methods`
(`METHODS`, every REST method served) with `lists` and `cards` (the methods themselves),
`portal` (the state they share), `query` (filters, order, paging), `render` and `spec`
(entities to API fields), `activities`, `pages` (encoded list pages), `params` (request
parameters), `auth` (OAuth server and the per-method operating budget).
"""

from sandbox.bitrix24.server import Bitrix24Sandbox

__all__ = ["Bitrix24Sandbox"]
