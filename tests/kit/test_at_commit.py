"""``at_commit``: work run last in the unit of work, inside its transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from usmis.config import Settings
from usmis.kit.db import at_commit, make_engine, transaction, unit_of_work

INSERT = text('INSERT INTO audit_spool (name, "offset") VALUES (:n, 0)')


def _names(settings: Settings) -> list[str]:
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        names = list(conn.execute(text("SELECT name FROM audit_spool ORDER BY name")).scalars())
    engine.dispose()
    return names


def test_it_runs_after_the_body_in_the_same_transaction(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)
    order: list[str] = []
    with unit_of_work(engine, write=True) as conn:
        at_commit(conn, lambda: (order.append("hook"), conn.execute(INSERT, {"n": "b"})))
        at_commit(conn, lambda: at_commit(conn, lambda: order.append("added by a hook")))
        conn.execute(INSERT, {"n": "a"})
        order.append("body")
    assert order == ["body", "hook", "added by a hook"]
    assert _names(settings) == ["a", "b"]
    engine.dispose()


def test_its_failure_rolls_the_unit_back(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)

    def fail() -> None:
        raise RuntimeError("the audit log is unwritable")

    def unit() -> None:
        with unit_of_work(engine, write=True) as conn:
            conn.execute(INSERT, {"n": "a"})
            at_commit(conn, fail)

    with pytest.raises(RuntimeError):
        unit()
    assert _names(settings) == []
    # The connection went back to the pool without the failed unit's hooks.
    with unit_of_work(engine, write=True) as conn:
        conn.execute(INSERT, {"n": "c"})
    assert _names(settings) == ["c"]
    engine.dispose()


def test_outside_a_unit_of_work_it_runs_at_once(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)
    ran: list[int] = []
    with transaction(engine) as conn:
        at_commit(conn, lambda: ran.append(1))
        assert ran == [1]
    engine.dispose()
