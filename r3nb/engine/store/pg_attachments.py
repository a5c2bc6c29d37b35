"""The attachments section of the store (``interface.Store``, "attachments") on
PostgreSQL: images sent with prompts, one row each (migration "0006_attachments").

Written just before the prompt's message row, read when a model's context or an
authorized ``GET attachments/{id}`` needs the bytes; deleted with the conversation
(``ON DELETE CASCADE``). Not revisions: a prompt's row carries the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .rows import ATTACHMENT_COLUMNS, attachment_from_row
from .values import StoredAttachment

if TYPE_CHECKING:
    from .pg_connection import PgThread
    from .pg_ops import PostgresOperations


class PostgresAttachments:
    """Mixed into ``PostgresStore``: it provides ``_thread`` and ``_ops``."""

    _thread: PgThread
    _ops: PostgresOperations

    async def add_attachments(self, attachments: Sequence[StoredAttachment]) -> None:
        if attachments:
            await self._thread.run(_add, self._ops, list(attachments))

    async def get_attachments(self, ids: Sequence[str]) -> dict[str, StoredAttachment]:
        if not ids:
            return {}
        return await self._thread.run(_get, self._ops, list(ids))

    async def delete_attachments(self, mid: str) -> int:
        return await self._thread.run(_delete, self._ops, mid)


# The connection is taken from ``ops`` on the DB thread: it changes on a reconnection.


def _add(ops: PostgresOperations, attachments: list[StoredAttachment]) -> None:
    with ops.con.transaction(), ops.con.cursor() as cur:
        cur.executemany(
            f"INSERT INTO attachments ({ATTACHMENT_COLUMNS}, size)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (a.id, a.message_id, a.conversation_id, a.kind, a.mime, a.name, a.data,
                 a.created_at, a.size)
                for a in attachments
            ],
        )  # fmt: skip


def _get(ops: PostgresOperations, ids: list[str]) -> dict[str, StoredAttachment]:
    found = ops.con.execute(
        f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = ANY(%s::text[])", [ids]
    ).fetchall()
    return {str(r[0]): attachment_from_row(r) for r in found}


def _delete(ops: PostgresOperations, mid: str) -> int:
    found = ops.con.execute(
        "DELETE FROM attachments WHERE message_id = %s RETURNING id", [mid]
    ).fetchall()
    return len(found)
