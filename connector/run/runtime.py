"""Shared wiring for the CLI and the scheduler: config, mirror, adapters."""

from __future__ import annotations

from adapters import registry
from connector.config import loader as config_mod
from connector.config.loader import Config, ConfigError, SourceConfig
from connector.mirror.store import Mirror
from connector.mirror.tokens import TokenStore


def load_config(path: str | None) -> Config:
    return config_mod.load(path)


def open_mirror(cfg: Config, read_only: bool = False) -> Mirror:
    """The mirror (raises StorageError naming the file and the fix when it cannot be used);
    `read_only`: for commands that only look, which then write nothing at all."""
    return Mirror(cfg.storage_path, read_only=read_only)


def token_store(cfg: Config) -> TokenStore:
    return TokenStore(cfg.token_path)


def make_adapter(cfg: Config, source: SourceConfig, limits=None):
    """The adapter for one source, by its CRM in the registry (whose adapter modules are imported
    only now: a CLI call touches only what it needs). `limits`: where its API limits live
    (`adapters.limits`); None keeps them in this process."""
    return registry.get(source.kind).make_adapter(source, token_store(cfg.scoped(source.name)), limits=limits)


def pick_sources(cfg: Config, name: str | None) -> list[SourceConfig]:
    if name is None:
        return list(cfg.sources)
    return [cfg.source(name)]


__all__ = ["Config", "ConfigError", "SourceConfig", "load_config", "open_mirror", "token_store",
           "make_adapter", "pick_sources"]
