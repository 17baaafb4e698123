"""FastStatement: the hot-path statement runner behaves like SQLAlchemy's execute."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from usmis.kit.db import FastStatement, make_engine


def test_rows_commit_and_errors_as_sqlalchemy_raises_them(database_url: str) -> None:
    engine = make_engine(database_url)
    insert = FastStatement(text("INSERT INTO fast_t (k, v) VALUES (:k, :v)"))
    select = FastStatement(text("SELECT v FROM fast_t WHERE k = :k"))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE fast_t (k INTEGER PRIMARY KEY, v VARCHAR(10))"))
    with engine.connect() as conn:
        insert.run(conn, {"k": 1, "v": "one"})
        conn.commit()  # the transaction FastStatement began is the connection's own
    with engine.connect() as conn:
        assert [tuple(r) for r in select.run(conn, {"k": 1})] == [("one",)]
        with pytest.raises(IntegrityError) as caught:
            insert.run(conn, {"k": 1, "v": "again"})
        assert isinstance(caught.value, DBAPIError)  # what retry loops catch
    engine.dispose()
