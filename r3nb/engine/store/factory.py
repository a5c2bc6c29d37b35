"""Which backend a store location names: the one place the engine turns a setting into a store.

``db_path`` stays one setting for every deployment: a DuckDB file (or ``:memory:``) on a
single-user server or in a kernel, a ``postgresql://`` URL for the hub service. The
PostgreSQL backend is imported only when named, so a single-user server never loads a
PostgreSQL driver.
"""

from __future__ import annotations

from .duckdb_store import DuckDBStore
from .interface import Store

#: URL schemes that name the PostgreSQL backend (libpq's two spellings).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: str) -> bool:
    """True when ``location`` is a PostgreSQL URL rather than a DuckDB path."""
    return location.startswith(POSTGRES_SCHEMES)


def make_store(location: str) -> Store:
    """The backend for ``location``, not yet opened (``Store.open`` does that)."""
    if is_postgres(location):
        from .pg_store import PostgresStore  # only the hub service needs it

        return PostgresStore(location)
    return DuckDBStore(location)
