"""The error hierarchy: each error knows the HTTP status it becomes.

Handlers never catch these one by one; the base handler's ``write_error`` turns any
``R3nbError`` into ``{"error": message}`` with its status, and the comm relay does the
same for embedded mode.
"""

from __future__ import annotations

from typing import Any

from r3nb.protocol import RETRY_AFTER_HEADER


class R3nbError(Exception):
    """Base of every error a client may see. ``message`` is for a person to act on."""

    status = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        #: More fields of the error body (``protocol.ErrorBody``), beside ``error``.
        self.extra: dict[str, Any] = {}
        #: Whole seconds after which the call may succeed (429, 503), else None.
        self.retry_after: int | None = None

    def retry_in(self, seconds: float) -> None:
        """Say when to try again, both ways: the ``Retry-After`` header for HTTP clients
        and a ``retry_after`` body field for the comm relay, which carries no headers."""
        whole = max(1, int(seconds + 0.999))
        self.retry_after = whole
        self.headers[RETRY_AFTER_HEADER] = str(whole)
        self.extra["retry_after"] = whole


class BadRequest(R3nbError):
    status = 400


class Forbidden(R3nbError):
    """Authenticated, but not allowed: an admin-only report asked for by someone else."""

    status = 403


class NotFound(R3nbError):
    status = 404


class Conflict(R3nbError):
    """The request clashes with what is happening (a reply still streaming). The body
    names the message in the way (``message_id``), so a client can follow or stop it."""

    status = 409

    def __init__(self, message: str, *, message_id: str | None = None) -> None:
        super().__init__(message)
        self.extra = {"message_id": message_id} if message_id else {}


class PayloadTooLarge(R3nbError):
    status = 413


class RateLimited(R3nbError):
    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_in(retry_after)


#: The sweeper tries to reopen a failed store at each tick (``cleanup_interval``, 60 s
#: unless configured): when a 503 suggests trying again.
STORE_RETRY_SECONDS = 60.0


class StoreUnavailable(R3nbError):
    """The DuckDB file cannot be used (locked by another process, unwritable, corrupt)."""

    status = 503

    def __init__(self, message: str, *, retry_after: float = STORE_RETRY_SECONDS) -> None:
        super().__init__(message)
        self.retry_in(retry_after)


class ProviderError(Exception):
    """A provider failed. ``reason`` is short and actionable; it is stored on the message.

    Not an ``R3nbError``: a provider failure never becomes an HTTP error of our API, it
    ends the assistant message with status ``error``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
