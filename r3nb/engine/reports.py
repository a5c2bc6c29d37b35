"""Admins' reports: usage per person, model and UTC day (JSON or CSV), and the audit
trail of who sent what to which model.

Only admins (``c.R3nbApp.admin_users``; on the hub service, hub admins) may read them:
a report names everyone. Dates are UTC days, ``since`` and ``until`` inclusive, so
``?since=2026-12-01&until=2026-12-01`` is one day; the default is the last 30 days.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping, Sequence
from typing import Any

from r3nb.errors import BadRequest, Forbidden
from r3nb.protocol import AuditRow, UsageRow

from .store import StoreInterface

DEFAULT_DAYS = 30
#: The longest span one request may ask for (a year and a day: a leap year's report).
MAX_DAYS = 367
AUDIT_PAGE = 100
AUDIT_MAX = 1000
USAGE_COLUMNS = tuple(UsageRow.__annotations__)
AUDIT_COLUMNS = tuple(AuditRow.__annotations__)


def require_admin(is_admin: bool, what: str) -> None:
    if not is_admin:
        raise Forbidden(f"only admins may read {what} (c.R3nbApp.admin_users)")


def _day(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"'{name}' must be a date YYYY-MM-DD (UTC), not {value[:40]!r}") from None


def span(query: Mapping[str, str], today: dt.date | None = None) -> tuple[float, float]:
    """[since, until) in Unix seconds from ``since``/``until`` dates (inclusive days)."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    until = _day(query["until"], "until") if "until" in query else today
    since = (
        _day(query["since"], "since")
        if "since" in query
        else until - dt.timedelta(days=DEFAULT_DAYS - 1)
    )
    if since > until:
        raise BadRequest(f"'since' ({since}) is after 'until' ({until})")
    if (until - since).days + 1 > MAX_DAYS:
        raise BadRequest(f"a report covers at most {MAX_DAYS} days; ask for several")
    start = dt.datetime.combine(since, dt.time(), dt.timezone.utc).timestamp()
    end = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    return start, end.timestamp()


def output_format(query: Mapping[str, str]) -> str:
    chosen = query.get("format", "json")
    if chosen not in ("json", "csv"):
        raise BadRequest("'format' must be 'json' or 'csv'")
    return chosen


def to_csv(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as CSV with a header line. A cell a spreadsheet would run as a formula
    (starting with = + - @, a tab or a carriage return) is prefixed with ' (OWASP's
    advice for CSV injection): prompts are written by anyone."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row[c]) for c in columns])
    return out.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


async def usage_report(
    store: StoreInterface, query: Mapping[str, str]
) -> tuple[dict[str, Any], list[UsageRow]]:
    """The rows of ``GET usage/report`` and what they cover."""
    since, until = span(query)
    rows = await store.usage_rows(since, until)
    return {"since": since, "until": until}, rows


def audit_cursor(value: str | None) -> tuple[float, str] | None:
    """``before`` as given out by the previous page: ``<created_at>:<message id>``."""
    if not value:
        return None
    at, _, mid = value.partition(":")
    try:
        return float(at), mid
    except ValueError:
        raise BadRequest("'before' must be a cursor from the previous page") from None


async def audit(store: StoreInterface, query: Mapping[str, str]) -> dict[str, Any]:
    """A page of ``GET audit`` and the cursor of the next (None on the last)."""
    since, until = span(query)
    try:
        limit = int(query.get("limit", AUDIT_PAGE))
    except ValueError:
        raise BadRequest("'limit' must be a whole number") from None
    if not 1 <= limit <= AUDIT_MAX:
        raise BadRequest(f"'limit' must be between 1 and {AUDIT_MAX}")
    rows = await store.audit_rows(since, until, limit, audit_cursor(query.get("before")))
    following = f"{rows[-1]['at']!r}:{rows[-1]['message_id']}" if len(rows) == limit else None
    return {"since": since, "until": until, "sends": rows, "next": following}
