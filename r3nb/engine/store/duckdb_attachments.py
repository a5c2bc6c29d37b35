"""The attachments section of the store (``interface.Store``, "attachments") on DuckDB.

An image sent with a prompt is one row of ``attachments`` (migration
"0008_attachments"), written just before the prompt's message row and read back when a
model's context or an authorized ``GET attachments/{id}`` needs its bytes. Not mirrored
in memory (a few MB each); parameterized statements on the store's one DB thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import duckdb

from .rows import ATTACHMENT_COLUMNS as _COLUMNS
from .rows import attachment_from_row
from .values import StoredAttachment

if TYPE_CHECKING:
    from .duckdb_ops import DuckDBOperations
    from .duckdb_thread import DuckDBThread


class DuckDBAttachments:
    """Mixed into ``DuckDBStore``: it provides ``_thread`` and ``_ops``."""

    _thread: DuckDBThread
    _ops: DuckDBOperations

    async def add_attachments(self, attachments: Sequence[StoredAttachment]) -> None:
        if attachments:
            await self._thread.run(_add, self._ops.con, list(attachments))

    async def get_attachments(self, ids: Sequence[str]) -> dict[str, StoredAttachment]:
        if not ids:
            return {}
        return await self._thread.run(_get, self._ops.con, list(ids))

    async def delete_attachments(self, mid: str) -> int:
        return await self._thread.run(_delete, self._ops.con, mid)


def _add(con: duckdb.DuckDBPyConnection, attachments: list[StoredAttachment]) -> None:
    con.executemany(
        f"INSERT INTO attachments ({_COLUMNS}, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            [a.id, a.message_id, a.conversation_id, a.kind, a.mime, a.name, a.data,
             a.created_at, a.size]
            for a in attachments
        ],
    )  # fmt: skip


def _get(con: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, StoredAttachment]:
    found = con.execute(
        f"SELECT {_COLUMNS} FROM attachments WHERE id IN (SELECT unnest(?))", [ids]
    ).fetchall()
    return {r[0]: attachment_from_row(r) for r in found}


def _delete(con: duckdb.DuckDBPyConnection, mid: str) -> int:
    return len(
        con.execute("DELETE FROM attachments WHERE message_id = ? RETURNING id", [mid]).fetchall()
    )
