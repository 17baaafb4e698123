"""insert_rows: many rows at once (COPY on PostgreSQL), in the caller's transaction."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.exc import IntegrityError

from usmis.kit.db import _copy_types, insert_rows, make_engine

_md = MetaData()
_t = Table("insert_rows_t", _md, Column("k", Integer, primary_key=True), Column("v", String(20)))


def test_rows_commit_roll_back_and_fail_as_sqlalchemy_raises(database_url: str) -> None:
    engine = make_engine(database_url)
    _md.create_all(engine)
    try:
        with engine.begin() as conn:
            insert_rows(conn, _t, [{"k": i, "v": f"v{i}" if i % 2 else None} for i in range(500)])
        with engine.connect() as conn:
            insert_rows(conn, _t, [{"k": 1000, "v": "rolled back"}])
            conn.rollback()
            rows = conn.execute(select(_t).order_by(_t.c.k)).all()
        assert [tuple(r) for r in rows[:3]] == [(0, None), (1, "v1"), (2, None)]
        assert len(rows) == 500
        with engine.connect() as conn, pytest.raises(IntegrityError):  # a duplicate key
            insert_rows(conn, _t, [{"k": 7, "v": "again"}])
    finally:
        _md.drop_all(engine)
        engine.dispose()


_typed = Table(
    "insert_rows_typed", _md, Column("k", BigInteger, primary_key=True), Column("n", Integer),
    Column("s", String(40)), Column("txt", Text), Column("b", Boolean), Column("f", Float),
    Column("at", DateTime(timezone=True)), Column("raw", LargeBinary), Column("d", Date),
)
_numeric = Table("insert_rows_numeric", _md, Column("k", Integer, primary_key=True),
                 Column("amount", Numeric(18, 2)))


def test_every_column_type_round_trips_exactly(database_url: str) -> None:
    """On PostgreSQL the typed table goes by binary COPY (each value sent as its column's
    type) and the one with a numeric column by text COPY; both read back equal."""
    rows = [
        {"k": 2**40, "n": -7, "s": "Ақсу 'кв.' \\ \t tab", "txt": "line\nbreak", "b": True,
         "f": 5.25, "at": datetime(2024, 2, 8, 11, 50, 0, 123456, tzinfo=timezone(
             timedelta(hours=5))), "raw": bytes(range(256)), "d": date(1984, 6, 4)},
        {"k": 1, "n": None, "s": None, "txt": None, "b": None, "f": None, "at": None,
         "raw": None, "d": None},
    ]
    assert _copy_types(_typed, tuple(rows[0])) is not None  # binary
    assert _copy_types(_numeric, ("k", "amount")) is None  # text
    engine = make_engine(database_url)
    _md.create_all(engine)
    try:
        with engine.begin() as conn:
            insert_rows(conn, _typed, rows)
            insert_rows(conn, _numeric, [{"k": 1, "amount": 12.5}])
        with engine.connect() as conn:
            got = [r._asdict() for r in conn.execute(select(_typed).order_by(_typed.c.k))]
            num = conn.execute(select(_numeric)).one()
        assert got[0] == rows[1]
        assert {k: v for k, v in got[1].items() if k != "at"} == {
            k: v for k, v in rows[0].items() if k != "at"}
        at = rows[0]["at"]
        assert isinstance(at, datetime)
        # PostgreSQL: the same instant; SQLite keeps the wall-clock time without its offset
        assert got[1]["at"] == (at if engine.dialect.name == "postgresql"
                                else at.replace(tzinfo=None))
        assert float(num.amount) == 12.5
    finally:
        _md.drop_all(engine)
        engine.dispose()


_reserved = Table("insert_rows_reserved", _md, Column("k", Integer, primary_key=True),
                  Column("end", DateTime(timezone=True)), Column("user", String(10)))


def test_reserved_words_as_column_names(database_url: str) -> None:
    # access_care_link has a column named "end": the COPY column list must quote it
    engine = make_engine(database_url)
    _md.create_all(engine)
    at = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            insert_rows(conn, _reserved, [{"k": 1, "end": at, "user": "u"}])
        with engine.connect() as conn:
            k, end, user = conn.execute(select(_reserved)).one()
        assert (k, user) == (1, "u")
        assert end.replace(tzinfo=end.tzinfo or UTC) == at  # SQLite keeps no offset
    finally:
        _md.drop_all(engine)
        engine.dispose()
