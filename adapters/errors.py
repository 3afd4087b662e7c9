"""Errors adapters raise. Messages name the source and say what to do; they never hold secrets."""


class SourceError(Exception):
    """A stream or call failed; the message is fit to show the admin."""


class StreamError(SourceError):
    """One stream failed (bad page shape, malformed JSON, persistent 5xx); others may still run."""


class AuthError(SourceError):
    """Credentials rejected; nothing else will work for this source until the admin acts."""


class ReauthoriseError(AuthError):
    """The refresh token is spent, revoked or expired: only `crm-connector auth SOURCE` helps.
    Never retried (resending a spent token cannot work); the admin is alerted."""


class UnreachableError(SourceError):
    """No connection to the CRM's host (DNS, refused, connect timeout, TLS): the source's
    other streams would fail the same way, so they are not attempted."""


class ReplyLost(StreamError):
    """A request that must not be sent twice got no readable reply (it may have been applied)."""


class NotPermitted(StreamError):
    """The CRM user may not do what was asked (Bitrix24: only a CRM administrator creates custom
    fields); retrying cannot help until someone grants the right or does it."""


class BlockedError(SourceError):
    """The CRM blocked this account or IP (amoCRM 403): stop every request to this source now."""


class ScopeError(SourceError):
    """The credentials lack the scope a stream needs; skip the stream with a warning."""


class FieldTypeError(SourceError):
    """A KPI field exists in the CRM with a non-numeric type."""


REAUTHORISE = "re-authorise: run `crm-connector auth"


def needs_reauthorisation(err: BaseException) -> bool:
    """Whether an error asks the admin to run `crm-connector auth`: decided by its type where it
    is caught, never by reading its message afterwards."""
    return isinstance(err, ReauthoriseError)


def reauthorise(crm: str, source: str, why: str, args: str = "") -> ReauthoriseError:
    """The one wording for a token the server no longer accepts: what to run, then why."""
    return ReauthoriseError(f"{crm} source '{source}': {REAUTHORISE} {source}{args}` ({why})")


class Interrupted(Exception):
    """A stop was asked for (SIGTERM, Ctrl-C): a wait was cut short or a request not sent.
    Not a failure: what was committed stays, the run is recorded as interrupted."""
