"""Errors adapters raise. Messages name the source and say what to do; they never hold secrets."""


class SourceError(Exception):
    """A stream or call failed; the message is fit to show the admin."""


class StreamError(SourceError):
    """One stream failed (bad page shape, malformed JSON, persistent 5xx); others may still run."""


class AuthError(SourceError):
    """Credentials rejected; nothing else will work for this source until the admin acts."""


class BlockedError(SourceError):
    """The CRM blocked this account or IP (amoCRM 403): stop every request to this source now."""


class ScopeError(SourceError):
    """The credentials lack the scope a stream needs; skip the stream with a warning."""


class FieldTypeError(SourceError):
    """A KPI field exists in the CRM with a non-numeric type."""
