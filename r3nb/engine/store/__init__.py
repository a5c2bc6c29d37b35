"""Persistence: conversations and messages, behind one interface.

- ``interface.py``   the ``Store`` protocol: every method the engine calls, and its contract
- ``values.py``      what callers hand in (``NewMessage``, ``Final``, ``HEAD``) and get back
- ``rows.py``        the columns, derived once from the wire shapes; rows <-> dicts
- ``schema.py``      the tables, as ordered named migrations (and how to add a column)
- ``paging.py``      the conversation list's order and cursors
- ``trees.py``       each conversation's branch tree, kept in memory
- ``factory.py``     which backend a location names (a path: DuckDB; a URL: PostgreSQL)
- ``duckdb_store.py`` the DuckDB backend: ``duckdb_thread`` (the connection and its thread),
  ``duckdb_ops`` (what runs on it), ``duckdb_sql`` (every statement), ``duckdb_admit``
  (group commit of admissions), ``duckdb_acl`` and ``duckdb_report`` (access, reports)
- ``pg_store.py``    the PostgreSQL backend (hub service): ``pg_connection``, ``pg_ops``,
  ``pg_sql``, ``pg_schema``, ``pg_notify`` (what other processes wrote), ``pg_access``,
  ``pg_report``; imported only for a ``postgresql://`` location

Only this package holds SQL. The names the rest of r3nb imported from the single
``store.py`` module are re-exported here unchanged; ``Store`` is still the name that
constructs the DuckDB backend (``Store(path)``), while code that takes any backend
annotates with ``StoreInterface`` (``interface.Store``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .duckdb_store import DuckDBStore, default_db_path
from .factory import is_postgres, make_store
from .interface import Store as StoreInterface
from .schema import MIGRATIONS
from .values import (
    DEFAULT_TITLE,
    HEAD,
    Context,
    Final,
    NewMessage,
    Parent,
    SnapshotParts,
    StoredAttachment,
    new_id,
)

#: The DuckDB backend, under the name every caller constructed before the interface.
Store = DuckDBStore

__all__ = [
    "DEFAULT_TITLE",
    "HEAD",
    "MIGRATIONS",
    "Context",
    "DuckDBStore",
    "Final",
    "NewMessage",
    "Parent",
    "SnapshotParts",
    "Store",
    "StoreInterface",
    "StoredAttachment",
    "default_db_path",
    "is_postgres",
    "make_store",
    "new_id",
]

if TYPE_CHECKING:  # mypy proves the DuckDB backend implements the whole interface
    _conforms: type[StoreInterface] = DuckDBStore
