"""Fixtures for the amoCRM sandbox (filled in by the sandbox work)."""
