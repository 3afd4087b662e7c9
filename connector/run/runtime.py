"""Shared wiring for the CLI and the scheduler: config, mirror, adapters."""

from __future__ import annotations

from dataclasses import replace

from adapters import registry
from connector.config import loader as config_mod
from connector.config.loader import Config, ConfigError, SourceConfig
from connector.mirror.store import Mirror
from connector.mirror.tokens import TokenStore


def load_config(path: str | None, secrets: bool = True) -> Config:
    """`secrets=False`: for commands that only read the mirror (see `config.load`)."""
    return config_mod.load(path, secrets)


def open_mirror(cfg: Config, read_only: bool = False) -> Mirror:
    """The mirror (raises StorageError naming the file and the fix when it cannot be used);
    `read_only`: for commands that only look, which then write nothing at all."""
    return Mirror(cfg.storage_path, read_only=read_only)


def token_store(cfg: Config) -> TokenStore:
    return TokenStore(cfg.token_path)


SYNC, REFRESH = "sync", "refresh"  # what an adapter is for: the jobs, or webhook refreshes


def make_adapter(cfg: Config, source: SourceConfig, limits=None, role: str = SYNC):
    """The adapter for one source, by its CRM in the registry (whose adapter modules are imported
    only now: a CLI call touches only what it needs). `limits`: where its API limits live
    (`adapters.limits`); None keeps them in this process.

    With webhooks on (the source has a `webhook_secret`), the portal's limits are split: the
    refreshes get `[webhooks] share` of its request rate and bucket, the jobs the rest, so the
    two together never exceed what the portal allows, in one process or many, whatever each
    one is doing (a nightly run keeps a share free for refreshes)."""
    if source.webhook_secret:
        part = cfg.webhooks.share if role == REFRESH else 1.0 - cfg.webhooks.share
        source = shared(source, part)
        if limits is not None and role == REFRESH:
            limits = limits.namespaced(REFRESH)
    return registry.get(source.kind).make_adapter(source, token_store(cfg.scoped(source.name)), limits=limits)


def shared(source: SourceConfig, part: float) -> SourceConfig:
    """`source` with `part` (0-1) of its request rate and of its request bucket (where its CRM
    has one): two such shares that add up to 1 stay within the portal's limits together."""
    options = dict(source.options)
    if options.get("bucket_size"):
        options["bucket_size"] = max(3, int(options["bucket_size"] * part))
    return replace(source, requests_per_second=source.requests_per_second * part, options=options)


def pick_sources(cfg: Config, name: str | None) -> list[SourceConfig]:
    if name is None:
        return list(cfg.sources)
    return [cfg.source(name)]


__all__ = [
    "Config",
    "ConfigError",
    "SourceConfig",
    "load_config",
    "open_mirror",
    "token_store",
    "make_adapter",
    "pick_sources",
]
