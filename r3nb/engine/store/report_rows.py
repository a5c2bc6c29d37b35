"""The reports' rows (``interface.Store``, "reports") as every backend returns them: the
same grouping and columns whatever SQL dialect produced them."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from r3nb.protocol import AuditRow, UsageRow

#: An audit row's prompt is cut here: the report says who sent what, it is not an export.
PROMPT_CHARS = 500
#: Seconds in a UTC day: Unix time has no leap seconds, so floor(t / DAY) is the UTC day.
DAY = 86_400


def day_of(days_since_epoch: int) -> str:
    """A Unix day number as YYYY-MM-DD (UTC)."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=days_since_epoch)).isoformat()


def usage_row(row: Any) -> UsageRow:
    """One grouped row (day number, person, model, replies, tokens in, out, cost)."""
    return {
        "day": day_of(int(row[0])),
        "person": str(row[1]),
        "model": str(row[2]),
        "replies": int(row[3]),
        "prompt_tokens": int(row[4] or 0),
        "completion_tokens": int(row[5] or 0),
        "cost": float(row[6] or 0.0),
    }


def audit_row(row: Any) -> AuditRow:
    """One joined row (reply fields, then the prompt's text)."""
    return cast(
        AuditRow,
        {
            "at": float(row[0]),
            "person": str(row[1]),
            "source": row[2],
            "conversation_id": str(row[3]),
            "message_id": str(row[4]),
            "model": row[5],
            "status": row[6],
            "prompt_tokens": row[7],
            "completion_tokens": row[8],
            "cost": row[9],
            "prompt": str(row[10]),
        },
    )


def usage_by_author(found: list[Any]) -> dict[str, dict[str, Any]]:
    """``Store.usage``'s answer from its grouped rows (author, tokens, cost, count)."""
    return {
        r[0]: {"tokens": int(r[1] or 0), "cost": float(r[2] or 0.0), "messages": int(r[3])}
        for r in found
    }
