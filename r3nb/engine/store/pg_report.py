"""The reports section of the store (``interface.Store``, "reports") on PostgreSQL:
the same questions as ``duckdb_report``, read from the ``messages`` table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from r3nb.protocol import AuditRow, UsageRow

from .report_rows import DAY, PROMPT_CHARS, audit_row, usage_row

if TYPE_CHECKING:
    from .pg_connection import PgThread
    from .pg_ops import PostgresOperations


class PostgresReports:
    """Mixed into ``PostgresStore``: it provides ``_thread`` and ``_ops``."""

    _thread: PgThread
    _ops: PostgresOperations

    async def usage_rows(self, since: float, until: float) -> list[UsageRow]:
        return await self._thread.run(_usage_rows, self._ops, since, until)

    async def audit_rows(
        self, since: float, until: float, limit: int, before: tuple[float, str] | None = None
    ) -> list[AuditRow]:
        return await self._thread.run(_audit_rows, self._ops, since, until, limit, before)


# The connection is taken from ``ops`` on the DB thread: it changes on a reconnection.


def _usage_rows(ops: PostgresOperations, since: float, until: float) -> list[UsageRow]:
    found = ops.con.execute(
        f"""SELECT floor(created_at / {DAY})::bigint, coalesce(author, ''),
                   coalesce(model, ''), count(*), sum(coalesce(prompt_tokens, 0)),
                   sum(coalesce(completion_tokens, 0)), sum(coalesce(cost, 0))
            FROM messages
            WHERE role = 'assistant' AND created_at >= %s AND created_at < %s
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        [since, until],
    ).fetchall()
    return [usage_row(row) for row in found]


def _audit_rows(
    ops: PostgresOperations,
    since: float,
    until: float,
    limit: int,
    before: tuple[float, str] | None,
) -> list[AuditRow]:
    at, mid = before if before is not None else (None, None)
    found = ops.con.execute(
        f"""SELECT r.created_at, coalesce(r.author, ''), r.source, r.conversation_id, r.id,
                   r.model, r.status, r.prompt_tokens, r.completion_tokens, r.cost,
                   coalesce(substr(p.content, 1, {PROMPT_CHARS}), '')
            FROM messages r LEFT JOIN messages p ON p.id = r.parent_id AND p.role = 'user'
            WHERE r.role = 'assistant' AND r.created_at >= %s AND r.created_at < %s
              AND (%s::float8 IS NULL OR r.created_at < %s
                   OR (r.created_at = %s AND r.id < %s))
            ORDER BY r.created_at DESC, r.id DESC LIMIT %s""",
        [since, until, at, at, at, mid, limit],
    ).fetchall()
    return [audit_row(row) for row in found]
