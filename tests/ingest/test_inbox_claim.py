"""claim_pending: the oldest pending messages, each to one worker (PostgreSQL: SKIP LOCKED)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, text

from usmis.ingest import repository as repo
from usmis.kit.db import make_engine


def _fill(conn: Connection, n: int) -> None:
    now = datetime.now(UTC)
    repo.insert_messages_bulk(conn, [
        {"source_id": "s", "channel": "mllp", "format": "hl7v2", "message_id": f"m{i}",
         "content": b"x", "kek_id": None, "dek": None, "content_hash": f"h{i}",
         "context": None, "event_time": None, "received_at": now, "status": "pending",
         "iin_status": None} for i in range(n)])


def test_claims_take_the_oldest_pending_first_and_never_the_same_twice(database_url: str
                                                                       ) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SKIP LOCKED claims are PostgreSQL's (SQLite has one writer)")
    engine = make_engine(database_url)
    try:
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
    finally:
        engine.dispose()
