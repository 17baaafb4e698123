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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, Table, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool, QueuePool

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
            # The busy timeout first, so it covers what follows.  WAL is persistent and
            # ``upgrade`` sets it; switching a file to WAL needs it to oneself and fails
            # "database is locked" at once, busy timeout or not, while another connection
            # opens it (seen: two engines' first connections to a fresh copy at once).
            cur.execute("PRAGMA busy_timeout=30000")
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives any crash of the application (SIGKILL
            # included: what was acknowledged stays); only an OS crash or power loss can undo
            # the last commits.  The embedded default trades that for speed; production runs
            # PostgreSQL, whose commits are flushed to disk before they return.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # No JIT compilation: it pays off for long analytic queries, not for these short ones,
    # whose cost estimates still pass its threshold as tables grow (measured at 20,000
    # people: 195 ms compiling a 5 ms patient-index lookup).
    connect_args = {"options": "-c jit=off", **kwargs.pop("connect_args", {})}
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
        connect_args=connect_args, **kwargs
    )

    @event.listens_for(engine, "checkin")
    def _restore_preparation(dbapi_conn: Any, _record: Any) -> None:
        # A FHIR search turns psycopg's automatic preparation off for its connection (its
        # values must be planned each time: usmis.fhir.search.service._no_generic_plans);
        # the next unit of work on this pooled connection gets the default back.
        if getattr(dbapi_conn, "prepare_threshold", 0) is None:
            dbapi_conn.prepare_threshold = PSYCOPG_PREPARE_THRESHOLD

    return engine


@contextmanager
def planned_per_call(conn: Connection) -> Iterator[None]:
    """The statements inside go unprepared on PostgreSQL, so each call is planned for its
    own values.  psycopg server-prepares a statement on its 5th run and PostgreSQL may then
    keep a generic plan — made, in a fresh database, while the tables were nearly empty
    (measured: the patient index's candidate lookup took 5 ms instead of 0.1 ms once its
    tables had grown).  Only these statements: the rest of the unit of work stays prepared
    (parsing and planning every statement of an ingest batch cost a quarter of the
    server's time)."""
    driver = conn.connection.driver_connection
    before = getattr(driver, "prepare_threshold", None)
    if before is None:
        yield
        return
    driver.prepare_threshold = None  # type: ignore[union-attr]
    try:
        yield
    finally:
        driver.prepare_threshold = before  # type: ignore[union-attr]


PSYCOPG_PREPARE_THRESHOLD = 5  # psycopg's default: server-prepare a statement on its 5th run


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

    Work registered with :func:`at_commit` runs after the body, just before the commit.
    """
    with engine.connect() as conn:
        if write and conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        hooks: list[Callable[[], object]] = []
        conn.info[_BEFORE_COMMIT] = hooks
        try:
            yield conn
            while hooks:  # a hook may add one
                hooks.pop(0)()
        except BaseException:
            conn.rollback()
            raise
        finally:
            del conn.info[_BEFORE_COMMIT]
        conn.commit()


_BEFORE_COMMIT = "usmis.before_commit"


def at_commit(conn: Connection, work: Callable[[], object]) -> None:
    """Run ``work`` as the last statements of ``conn``'s unit of work, in its transaction
    (its failure rolls the unit back), or now where ``conn`` is not in one.

    For a write that takes a lock every writer waits for (the audit chain's head): taken
    last, it is held only while the transaction commits, not while the rest runs."""
    hooks = conn.info.get(_BEFORE_COMMIT)
    if hooks is None:
        work()
    else:
        hooks.append(work)


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
    if url.startswith("sqlite"):
        # WAL is a property of the file: set here, once, while nobody else has it open, so
        # a copy of this database is WAL too (the test templates are copied).
        engine = make_engine(url, poolclass=NullPool)
        with engine.connect():
            pass
        engine.dispose()


class FastStatement:
    """A Core statement for the hot path: compiled once per dialect, run straight on the
    connection's DBAPI cursor, inside the connection's transaction.

    That skips SQLAlchemy's per-call execution machinery — about two thirds of the
    client-side cost of a small statement (measured 23 µs → 8 µs on SQLite), which matters
    for the few that run on every request (the access policy's lookup, the audit append).
    Bind processors still apply (dates on SQLite); rows come back as the driver returns
    them (tuples of strings and numbers); driver errors are raised as SQLAlchemy's
    ``DBAPIError`` family, as usual; engine events do not see these statements
    (``FastStatement.runs`` counts them).  No expanding (``IN``-list) parameters.

    On PostgreSQL (psycopg) the statement is server-prepared, parsed and planned once per
    connection, even where a caller turned preparation off for its own statements on that
    connection (the FHIR search does).  Meant for index lookups whose best plan does not
    depend on the values.
    """

    runs = 0  # statements run by every FastStatement of the process (for benchmarks)

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._plans: dict[tuple[str, str], tuple[str, Any, dict[str, Any], dict[str, Any]]] = {}

    def _plan(self, dialect: Any) -> tuple[str, Any, dict[str, Any], dict[str, Any]]:
        compiled = self.statement.compile(dialect=dialect)
        fixed: dict[str, Any] = {}
        procs: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if not bind.required:
                fixed[name] = proc(bind.value) if proc else bind.value
            elif proc is not None:
                procs[name] = proc
        order = None
        if compiled.positional:
            names = compiled.positiontup or ()
            order = itemgetter(*names) if names else (lambda _values: ())
        return compiled.string, order, fixed, procs

    def run(self, conn: Connection, params: dict[str, Any]) -> list[Any]:
        """Execute on ``conn`` in its transaction (begun here if none is); its rows (none
        for DML without RETURNING)."""
        key = (conn.dialect.name, conn.dialect.driver)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(conn.dialect)
        sql, order, fixed, procs = plan
        values = {**fixed, **params}
        for name, proc in procs.items():
            values[name] = proc(values[name])
        args: Any = values
        if order is not None:
            args = order(values)
            if not isinstance(args, tuple):  # itemgetter of one name
                args = (args,)
        if not conn.in_transaction():
            # So that the caller's commit commits what runs here (a write on a connection
            # SQLAlchemy has not used yet would otherwise be left to the pool's rollback).
            conn.begin()
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        FastStatement.runs += 1
        error = conn.dialect.loaded_dbapi.Error
        try:
            if key[1] != "psycopg":
                return _fetch(dbapi.cursor(), sql, args)
            driver = conn.connection.driver_connection
            saved = driver.prepare_threshold  # type: ignore[union-attr]
            driver.prepare_threshold = 0  # type: ignore[union-attr]
            try:
                return _fetch(dbapi.cursor(), sql, args)
            finally:
                driver.prepare_threshold = saved  # type: ignore[union-attr]
        except error as exc:
            # As SQLAlchemy would raise it, so callers' handling (deadlock retry, lost
            # connection, "database is locked") sees one exception family.
            raise DBAPIError.instance(sql, args, exc, error) from exc


def _fetch(cursor: Any, sql: str, args: Any) -> list[Any]:
    try:
        cursor.execute(sql, args)
        return list(cursor.fetchall()) if cursor.description is not None else []
    finally:
        cursor.close()


@cache
def _insert_of(table: Table) -> Any:
    return table.insert()  # built once: constructing it per call costs more than running it


# PostgreSQL's binary COPY, by column type as the PostgreSQL dialect compiles it: the
# server reads each value with the column's own receive function, so every type must have
# exactly the column's binary form (int4 is not int8; varchar's is text's).  A table with
# any other column type (numeric, JSON, …) is copied as text.
_BINARY = {"VARCHAR": "text", "TEXT": "text", "INTEGER": "int4", "BIGINT": "int8",
           "SMALLINT": "int2", "BOOLEAN": "bool", "TIMESTAMP WITH TIME ZONE": "timestamptz",
           "BYTEA": "bytea", "FLOAT": "float8", "DOUBLE PRECISION": "float8", "DATE": "date"}


@cache
def _copy_types(table: Table, columns: tuple[str, ...]) -> list[int] | None:
    """The columns' type OIDs for a binary ``COPY``, or None where one has no exact binary
    form (then the ``COPY`` goes as text)."""
    from psycopg.postgres import types as pg_types
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    names = [_BINARY.get(table.c[c].type.compile(dialect=dialect).split("(")[0])
             for c in columns]
    return None if None in names else [pg_types[str(n)].oid for n in names]


@cache
def _copy_plan(table: Table, columns: tuple[str, ...]
               ) -> tuple[str, list[int] | None, Callable[[dict[str, Any]], Any]]:
    from sqlalchemy.dialects import postgresql

    types = _copy_types(table, columns)
    quote = postgresql.dialect().identifier_preparer.quote  # type: ignore[no-untyped-call]
    sql = f"COPY {quote(table.name)} ({', '.join(map(quote, columns))}) FROM STDIN" + (
        " (FORMAT BINARY)" if types else "")
    values = itemgetter(*columns)
    if len(columns) == 1:  # itemgetter of one name gives the value, not a tuple
        return sql, types, lambda row: (values(row),)
    return sql, types, values


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Many rows of one shape (every row the same keys) into ``table``: PostgreSQL ``COPY``
    (several times cheaper than INSERTs for the client and the server alike; binary where
    every column's type allows, so bytes and times travel unconverted), elsewhere one
    executemany.  Values go to the driver as they are: for tables of plain column types
    (no bind processors), with every column that has only a Python-side default given,
    each value of its column's Python type (an aware datetime for a timestamptz)."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(_insert_of(table), list(rows))
        return
    sql, types, values = _copy_plan(table, tuple(rows[0]))
    raw = conn.connection.driver_connection
    assert raw is not None
    if not conn.in_transaction():
        conn.begin()  # the caller's commit commits it (as with conn.execute)
    error = conn.dialect.loaded_dbapi.Error
    try:
        with raw.cursor() as cur, cur.copy(sql) as copy:
            if types:
                copy.set_types(types)
            write = copy.write_row
            for row in rows:
                write(values(row))
    except error as exc:  # as SQLAlchemy raises it (see FastStatement.run)
        raise DBAPIError.instance(sql, None, exc, error) from exc

