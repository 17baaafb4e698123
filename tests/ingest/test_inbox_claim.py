"""claim_pending: the oldest pending messages, each to one worker (PostgreSQL: SKIP LOCKED);
has_pending."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from usmis.ingest import repository as repo
from usmis.kit.db import make_engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """The test database's engine, PostgreSQL only: SKIP LOCKED and the windowed claim are
    PostgreSQL's (SQLite has one writer)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("claims with SKIP LOCKED are PostgreSQL's")
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def _fill(conn: Connection, n: int) -> None:
    now = datetime.now(UTC)
    repo.insert_messages_bulk(conn, [
        {"source_id": "s", "channel": "mllp", "format": "hl7v2", "message_id": f"m{i}",
         "content": b"x", "kek_id": None, "dek": None, "content_hash": f"h{i}",
         "context": None, "event_time": None, "received_at": now, "status": "pending",
         "iin_status": None} for i in range(n)])


def test_claims_take_the_oldest_pending_first_and_never_the_same_twice(engine: Engine) -> None:
    with engine.begin() as c:
        _fill(c, 2500)
        ids = [r[0] for r in c.execute(text("SELECT id FROM ingest_inbox ORDER BY id"))]
        # the oldest 1,200 are done: the pending ones start past a window's width
        c.execute(text("UPDATE ingest_inbox SET status = 'done' WHERE id < :x"),
                  {"x": ids[1200]})
    with engine.connect() as a, engine.connect() as b:
        first = [r.id for r in repo.claim_pending(a, 1000, skip_locked=True)]
        assert first == ids[1200:2200]  # the oldest pending, in order
        # every pending message of b's window (1,000 ids from the oldest pending one on)
        # is now held by a: b still gets the next ones, past it, none of a's
        second = [r.id for r in repo.claim_pending(b, 10, skip_locked=True)]
        assert second == ids[2200:2210]
        a.rollback()  # a's messages are pending again, and the oldest
        assert [r.id for r in repo.claim_pending(a, 10, skip_locked=True)] == \
            ids[1200:1210]
        b.rollback()
        a.rollback()
    with engine.begin() as c:
        c.execute(text("UPDATE ingest_inbox SET status = 'done'"))
        assert repo.claim_pending(c, 10, skip_locked=True) == []


def _inbox_rows_read(plan: dict[str, Any]) -> float:
    """Rows the plan read from ingest_inbox (kept or filtered out), over all its nodes."""
    own = 0.0
    if plan.get("Relation Name") == "ingest_inbox":
        own = (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
               + plan.get("Rows Removed by Index Recheck", 0)) * plan.get("Actual Loops", 1)
    return own + sum(_inbox_rows_read(p) for p in plan.get("Plans", []))


def test_a_claim_reads_a_window_not_the_whole_backlog(engine: Engine) -> None:
    # A fresh table has no statistics: planned blind, the plain claim read and sorted every
    # pending message to lock a few.  The windowed one reads at most its window.
    with engine.connect() as c:
        _fill(c, 6000)
        window = repo.claim_window(10)
        stmt = repo._claim(10, window)
        sql = stmt.compile(dialect=c.dialect, compile_kwargs={"literal_binds": True})
        plan = c.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).scalar_one()
        # at most the window, + the two lookups of the oldest pending id (the plain
        # claim, planned the same way, read all 6,000)
        assert _inbox_rows_read(plan[0]["Plan"]) <= window + 2, plan
        c.rollback()


def test_has_pending_agrees_with_the_count(database_url: str) -> None:
    eng = make_engine(database_url)
    try:
        with eng.begin() as c:
            assert not repo.has_pending(c)
            _fill(c, 3)
            assert repo.has_pending(c)
            assert repo.pending_count(c) == 3
            c.execute(text("UPDATE ingest_inbox SET status = 'done'"))
            assert not repo.has_pending(c)
            assert repo.pending_count(c) == 0
    finally:
        eng.dispose()
