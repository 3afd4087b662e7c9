"""Bitrix24 adapters for unit tests on `responses` mocks: a source "b24" at a fake portal
(its incoming webhook HOOK, or OAuth with `portal_url=...` and `tokens`), fast (1000 requests
a second, a bucket of 1000, one worker unless told otherwise) and never sleeping."""

from __future__ import annotations

from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.config.loader import SourceConfig

HOOK = "https://portal.example.com/rest/1/s3cretcode/"


def adapter(tokens=None, **settings) -> Bitrix24Adapter:
    cfg = SourceConfig(
        name="b24",
        kind="bitrix24",
        **{
            "webhook_url": None if "portal_url" in settings else HOOK,
            "requests_per_second": 1000.0,
            "bucket_size": 1000,
            "max_workers": 1,
            **settings,
        },
    )
    a = Bitrix24Adapter(cfg, tokens)
    a.client.sleep = a.client.http.sleep = lambda s: None
    return a
