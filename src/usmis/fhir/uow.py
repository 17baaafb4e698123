"""The unit of work of FHIR boundaries (HTTP request, ingest message, CLI command).

SQLite allows one writer at a time.  A deferred transaction that reads first and writes
later fails with "database is locked" when another writer committed in between (its
snapshot is stale; the busy timeout cannot help).  So write units begin ``IMMEDIATE``:
they take the write lock up front and wait their turn (busy timeout), which also makes
conditional create race-safe on SQLite.  PostgreSQL needs nothing special here
(conditional operations take an advisory lock, see ``repository.lock_key``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine


@contextmanager
def unit_of_work(engine: Engine, *, write: bool) -> Iterator[Connection]:
    """Commit on success, roll back on any exception."""
    with engine.connect() as conn:
        if write and conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
