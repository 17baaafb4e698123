"""Database plumbing: one engine factory, one metadata, migrations, transactions.

Each domain declares its tables with SQLAlchemy Core in ``<domain>/tables.py`` on
:data:`metadata`; its SQL lives in ``<domain>/repository.py``.  Schema changes are Alembic
revisions in ``usmis/migrations/versions`` — one branch per domain (branch label = domain
name), so ``upgrade heads`` brings every domain up to date.

Services never commit: the boundary (HTTP request, ingest message, CLI command) opens
:func:`transaction` and everything inside it commits together or not at all.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.pool import QueuePool

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, *, pool_size: int = 10, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings each backend needs."""
    if url.startswith("sqlite"):
        # One file, many readers, one writer: WAL + a generous busy timeout.
        # Pooled: closing the last connection of a WAL database checkpoints and deletes the
        # WAL (~30 ms), so a connection per unit of work would pay that on every commit.
        if kwargs.setdefault("poolclass", QueuePool) is QueuePool:
            kwargs.setdefault("pool_size", min(pool_size, 5))
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, **kwargs
    )


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """The unit of work: commit on success, roll back on any exception."""
    with engine.begin() as conn:
        yield conn


@contextmanager
def unit_of_work(engine: Engine, *, write: bool) -> Iterator[Connection]:
    """The boundary's transaction: commit on success, roll back on any exception.

    SQLite allows one writer at a time.  A deferred transaction that reads first and writes
    later fails with "database is locked" when another writer committed in between (its
    snapshot is stale; the busy timeout cannot help).  So write units begin ``IMMEDIATE``:
    they take the write lock up front and wait their turn.  PostgreSQL needs nothing here.
    """
    with engine.connect() as conn:
        if write and conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def load_all_tables() -> MetaData:
    """Import every ``usmis.<domain>.tables`` module so :data:`metadata` is complete."""
    import usmis

    for mod in pkgutil.iter_modules(usmis.__path__):
        if mod.ispkg:
            try:
                importlib.import_module(f"usmis.{mod.name}.tables")
            except ModuleNotFoundError as exc:
                if exc.name != f"usmis.{mod.name}.tables":
                    raise
    return metadata


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest revision of every domain branch."""
    from alembic import command

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "heads")
