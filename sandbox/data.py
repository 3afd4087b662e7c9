"""Deterministic fake CRM account data shared by the amoCRM and Bitrix24 sandboxes.

`generate(seed, size, now)` builds a `Dataset`: plain dicts in id-sorted lists, neutral
vocabulary (servers render it in their own API's words), every timestamp in Unix seconds.
Servers read only through the `Dataset` object and tests mutate it through its methods,
so a test can change the "CRM" between two syncs.

The class and its mutations live in `data_store`, the per-entity generators in
`data_build`; import both names from here.
"""

from __future__ import annotations

import random
import time

from sandbox.data_build import Builder
from sandbox.data_store import ENTITIES, Dataset

__all__ = ["Dataset", "generate", "ENTITIES"]


def generate(seed: int = 1, size: int = 1000, now: int | None = None) -> Dataset:
    """Build a deterministic account with `size` deals; see the module docstring."""
    if now is None:
        now = int(time.time()) // 3600 * 3600
    ds = Dataset(now)
    Builder(ds, random.Random(seed), size).build()
    return ds
