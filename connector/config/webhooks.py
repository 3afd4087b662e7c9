"""The `[webhooks]` part of the config: `crm-connector serve`, the receiver of the CRMs' change
notifications (a mixin of `config.Checker`).

listen: "HOST:PORT" the receiver binds. public_url: the address the CRMs reach it at (what
`hooks install` registers; `/hooks/<source>/<webhook_secret>` is added). debounce_s: changes of
one record within this long become one read. share: the part (0-0.5) of each portal's request
rate kept for refreshes when its source has a `webhook_secret` (the jobs get the rest).
catch_up_s: how often missed events are fetched where the CRM queues them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class WebhooksConfig:
    listen: str = "127.0.0.1:8390"
    public_url: str | None = None
    debounce_s: float = 10.0
    share: float = 0.15
    catch_up_s: float = 300.0

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class WebhooksChecks:
    """`[webhooks]` checks for `config.Checker` (which gives `table`, `fail` and `in_range`)."""

    def webhooks(self, raw) -> WebhooksConfig:
        d = self.table(
            "webhooks",
            raw,
            {"listen": str, "public_url": str, "debounce_s": float, "share": float, "catch_up_s": float},
        )
        if "listen" in d:
            host, _, port = d["listen"].rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise self.fail(
                    "webhooks.listen", f'must be HOST:PORT such as "0.0.0.0:8390", got {d["listen"]!r}'
                )
        if "public_url" in d:
            parts = urlsplit(d["public_url"])
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise self.fail(
                    "webhooks.public_url",
                    f"must be an http(s) URL the CRM can reach, got {d['public_url']!r}",
                )
        self.in_range("webhooks", d, "webhooks.")
        return WebhooksConfig(**d)

    def webhook_secret(self, key: str, secret) -> None:
        if not isinstance(secret, str) or not re.fullmatch(r"[A-Za-z0-9_-]{24,256}", secret):
            raise self.fail(
                key,
                "must be a long random secret: 24 or more letters, digits, '-' or '_' "
                '(for example the output of `python -c "import secrets; '
                'print(secrets.token_urlsafe(32))"`)',
            )
