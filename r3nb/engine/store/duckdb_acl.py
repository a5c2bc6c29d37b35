"""The access section of the store (``interface.Store``, "access") on DuckDB.

Kept apart from the message and flush code: a conversation's owner and shares are a
hub-service concern, written rarely (create, share, revoke) and read in batches (one
query per page of the list, one per request that names a conversation). Every
statement is parameterized and runs on the store's one DB thread, like the rest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import duckdb

from .interface import ConversationAccess, Share

if TYPE_CHECKING:
    from .duckdb_ops import DuckDBOperations
    from .duckdb_thread import DuckDBThread


class DuckDBAccess:
    """Mixed into ``DuckDBStore``: it provides ``_thread`` and ``_ops``."""

    _thread: DuckDBThread
    _ops: DuckDBOperations

    async def set_owner(self, cid: str, owner: str, server: str) -> None:
        await self._thread.run(_set_owner, self._ops.con, cid, owner, server)

    async def access_of(self, cids: Sequence[str]) -> dict[str, ConversationAccess]:
        if not cids:
            return {}
        return await self._thread.run(_access_of, self._ops.con, list(cids))

    async def add_share(self, cid: str, share: Share, granted_by: str) -> bool:
        return await self._thread.run(_add_share, self._ops.con, cid, share, granted_by)

    async def remove_share(self, cid: str, share: Share) -> bool:
        return await self._thread.run(_remove_share, self._ops.con, cid, share)

    async def forget_access(self, cid: str) -> None:
        await self._thread.run(_forget_access, self._ops.con, cid)


def _set_owner(con: duckdb.DuckDBPyConnection, cid: str, owner: str, server: str) -> None:
    con.execute(
        """INSERT INTO conversation_owners (conversation_id, owner, server, created_at)
           VALUES (?, ?, ?, ?)
           ON CONFLICT (conversation_id) DO UPDATE SET owner = excluded.owner,
               server = excluded.server""",
        [cid, owner, server, time.time()],
    )


def _access_of(con: duckdb.DuckDBPyConnection, cids: list[str]) -> dict[str, ConversationAccess]:
    owners = con.execute(
        "SELECT conversation_id, owner, server FROM conversation_owners "
        "WHERE conversation_id IN (SELECT unnest(?))",
        [cids],
    ).fetchall()
    shares: dict[str, list[Share]] = {}
    for cid, kind, name in con.execute(
        "SELECT conversation_id, kind, name FROM conversation_shares "
        "WHERE conversation_id IN (SELECT unnest(?)) ORDER BY kind, name",
        [cids],
    ).fetchall():
        shares.setdefault(cid, []).append(Share(kind, name))
    return {
        cid: ConversationAccess(owner, server, tuple(shares.get(cid, ())))
        for cid, owner, server in owners
    }


def _add_share(con: duckdb.DuckDBPyConnection, cid: str, share: Share, granted_by: str) -> bool:
    row = con.execute(
        """INSERT INTO conversation_shares (conversation_id, kind, name, granted_by, created_at)
           VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING conversation_id""",
        [cid, share.kind, share.name, granted_by, time.time()],
    ).fetchone()
    return row is not None


def _remove_share(con: duckdb.DuckDBPyConnection, cid: str, share: Share) -> bool:
    row = con.execute(
        "DELETE FROM conversation_shares WHERE conversation_id = ? AND kind = ? AND name = ? "
        "RETURNING conversation_id",
        [cid, share.kind, share.name],
    ).fetchone()
    return row is not None


def _forget_access(con: duckdb.DuckDBPyConnection, cid: str) -> None:
    con.execute("DELETE FROM conversation_shares WHERE conversation_id = ?", [cid])
    con.execute("DELETE FROM conversation_owners WHERE conversation_id = ?", [cid])
