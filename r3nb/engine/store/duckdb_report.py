"""The reports section of the store (``interface.Store``, "reports") on DuckDB.

Admins' questions — who spent what on which model each day, who sent what — read the
``messages`` table the replies already live in: no second write path to keep in step,
and a reply counts from the moment it is admitted (a failed or cancelled reply used
tokens too). Parameterized statements on the store's one DB thread, like the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from r3nb.protocol import AuditRow, UsageRow

from .report_rows import DAY, PROMPT_CHARS, audit_row, usage_row

if TYPE_CHECKING:
    from .duckdb_ops import DuckDBOperations
    from .duckdb_thread import DuckDBThread


class DuckDBReports:
    """Mixed into ``DuckDBStore``: it provides ``_thread`` and ``_ops``."""

    _thread: DuckDBThread
    _ops: DuckDBOperations

    async def usage_rows(self, since: float, until: float) -> list[UsageRow]:
        return await self._thread.run(_usage_rows, self._ops.con, since, until)

    async def audit_rows(
        self, since: float, until: float, limit: int, before: tuple[float, str] | None = None
    ) -> list[AuditRow]:
        return await self._thread.run(_audit_rows, self._ops.con, since, until, limit, before)


def _usage_rows(con: duckdb.DuckDBPyConnection, since: float, until: float) -> list[UsageRow]:
    found = con.execute(
        f"""SELECT CAST(floor(created_at / {DAY}) AS BIGINT) AS day,
                   coalesce(author, ''), coalesce(model, ''), count(*),
                   sum(coalesce(prompt_tokens, 0)), sum(coalesce(completion_tokens, 0)),
                   sum(coalesce(cost, 0))
            FROM messages
            WHERE role = 'assistant' AND created_at >= ? AND created_at < ?
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        [since, until],
    ).fetchall()
    return [usage_row(row) for row in found]


def _audit_rows(
    con: duckdb.DuckDBPyConnection,
    since: float,
    until: float,
    limit: int,
    before: tuple[float, str] | None,
) -> list[AuditRow]:
    at, mid = before if before is not None else (None, None)
    found = con.execute(
        f"""SELECT r.created_at, coalesce(r.author, ''), r.source, r.conversation_id, r.id,
                   r.model, r.status, r.prompt_tokens, r.completion_tokens, r.cost,
                   coalesce(substr(p.content, 1, {PROMPT_CHARS}), '')
            FROM messages r LEFT JOIN messages p ON p.id = r.parent_id AND p.role = 'user'
            WHERE r.role = 'assistant' AND r.created_at >= ? AND r.created_at < ?
              AND (CAST(? AS DOUBLE) IS NULL OR r.created_at < ?
                   OR (r.created_at = ? AND r.id < ?))
            ORDER BY r.created_at DESC, r.id DESC LIMIT ?""",
        [since, until, at, at, at, mid, limit],
    ).fetchall()
    return [audit_row(row) for row in found]
