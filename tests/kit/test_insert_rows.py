"""insert_rows: many rows at once (COPY on PostgreSQL), in the caller's transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.exc import IntegrityError

from usmis.kit.db import insert_rows, make_engine

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
