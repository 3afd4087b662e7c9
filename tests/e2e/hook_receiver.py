"""The amoCRM webhook tests' receiver: `tests/hook_receiver.Receiver` at an amoCRM-style
path, keeping each POST as a `Delivery` (path, content type, pairs).

    with Receiver() as rx:
        ... register rx.url with a sandbox, change its dataset ...
        deliveries = rx.wait_for(1)
        deliveries[0].pairs   # the form body as (key, value) pairs, in order

Every POST is recorded and answered `status` (200 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests import hook_receiver

PATH = "/hooks/amocrm/secret-token-1234"


@dataclass
class Delivery:
    path: str
    content_type: str
    pairs: list[tuple[str, str]]

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.pairs if k == key), None)


class Receiver(hook_receiver.Receiver):
    def __init__(self, status: int = 200):
        super().__init__(status, path=PATH)

    def record(self, path: str, content_type: str, pairs: list[tuple[str, str]]) -> Delivery:
        return Delivery(path, content_type, pairs)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Delivery]:
        """The first `n` deliveries, waiting up to `timeout` seconds for them."""
        return self.wait(n, timeout)
