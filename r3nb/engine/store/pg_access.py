"""The access section of the store (``interface.Store``, "access") on PostgreSQL: who
owns a conversation, the hub server it was created through, whom it is shared with.

Written rarely (create, share, revoke) and read in batches (one query per page of the
list), so no cache: every process sees a share the moment it commits. Access rows are
not revisions (the interface says so): no counter, no notification.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .interface import ConversationAccess, Share
from .pg_connection import Connection

if TYPE_CHECKING:
    from .pg_connection import PgThread
    from .pg_ops import PostgresOperations


class PostgresAccess:
    """Mixed into ``PostgresStore``: it provides ``_thread`` and ``_ops``."""

    _thread: PgThread
    _ops: PostgresOperations

    async def set_owner(self, cid: str, owner: str, server: str) -> None:
        await self._thread.run(_set_owner, self._ops, cid, owner, server)

    async def access_of(self, cids: Sequence[str]) -> dict[str, ConversationAccess]:
        if not cids:
            return {}
        return await self._thread.run(_access_of, self._ops, list(cids))

    async def add_share(self, cid: str, share: Share, granted_by: str) -> bool:
        return await self._thread.run(_add_share, self._ops, cid, share, granted_by)

    async def remove_share(self, cid: str, share: Share) -> bool:
        return await self._thread.run(_remove_share, self._ops, cid, share)

    async def forget_access(self, cid: str) -> None:
        await self._thread.run(_forget_access, self._ops, cid)


# The connection is taken from ``ops`` on the DB thread: it changes on a reconnection.


def _set_owner(ops: PostgresOperations, cid: str, owner: str, server: str) -> None:
    ops.con.execute(
        """INSERT INTO conversation_owners (conversation_id, owner, server, created_at)
           VALUES (%s, %s, %s, %s)
           ON CONFLICT (conversation_id) DO UPDATE SET owner = excluded.owner,
               server = excluded.server""",
        [cid, owner, server, time.time()],
    )


def _access_of(ops: PostgresOperations, cids: list[str]) -> dict[str, ConversationAccess]:
    con: Connection = ops.con
    with con.transaction():  # owners and shares from one moment
        owners = con.execute(
            "SELECT conversation_id, owner, server FROM conversation_owners"
            " WHERE conversation_id = ANY(%s::text[])",
            [cids],
        ).fetchall()
        found = con.execute(
            "SELECT conversation_id, kind, name FROM conversation_shares"
            ' WHERE conversation_id = ANY(%s::text[]) ORDER BY kind, name COLLATE "C"',
            [cids],
        ).fetchall()
    shares: dict[str, list[Share]] = {}
    for cid, kind, name in found:
        shares.setdefault(cid, []).append(Share(kind, name))
    return {
        cid: ConversationAccess(owner, server, tuple(shares.get(cid, ())))
        for cid, owner, server in owners
    }


def _add_share(ops: PostgresOperations, cid: str, share: Share, granted_by: str) -> bool:
    row = ops.con.execute(
        """INSERT INTO conversation_shares (conversation_id, kind, name, granted_by, created_at)
           VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING conversation_id""",
        [cid, share.kind, share.name, granted_by, time.time()],
    ).fetchone()
    return row is not None


def _remove_share(ops: PostgresOperations, cid: str, share: Share) -> bool:
    row = ops.con.execute(
        "DELETE FROM conversation_shares WHERE conversation_id = %s AND kind = %s"
        " AND name = %s RETURNING conversation_id",
        [cid, share.kind, share.name],
    ).fetchone()
    return row is not None


def _forget_access(ops: PostgresOperations, cid: str) -> None:
    con = ops.con
    with con.transaction():
        con.execute("DELETE FROM conversation_shares WHERE conversation_id = %s", [cid])
        con.execute("DELETE FROM conversation_owners WHERE conversation_id = %s", [cid])
