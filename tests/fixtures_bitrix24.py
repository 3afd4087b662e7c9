"""Fixtures for the Bitrix24 sandbox (filled in by the sandbox work)."""
