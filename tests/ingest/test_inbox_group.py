"""receive_group: a listener's group commit writes its messages as one at a time would."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select

from usmis.config import Settings
from usmis.ingest import inbox
from usmis.ingest import tables as t
from usmis.ingest.mapping.common import Reject
from usmis.ingest.model import Incoming
from usmis.ingest.sealing import unseal
from usmis.kit.db import transaction

WHEN = datetime(2024, 3, 1, 10, 30, tzinfo=UTC)


def _msg(body: str) -> Incoming:
    return Incoming(source_id="his-test", channel="mllp", format="hl7v2",
                    message_id=body, raw=body.encode(), event_time=WHEN)


def _rows(engine: Engine) -> dict[int, tuple[str, int]]:
    with engine.connect() as c:
        return {r.id: (r.status, r.duplicates) for r in c.execute(
            select(t.inbox.c.id, t.inbox.c.status, t.inbox.c.duplicates))}


def test_a_group_counts_repeats_within_it_and_against_the_inbox(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    with transaction(engine) as c:
        (old,) = inbox.receive_group(c, settings, [(_msg("A"), None, None)])
    assert old.new
    bad = Reject("required", "PID-3", "no identifier")
    with transaction(engine) as c:
        got = inbox.receive_group(c, settings, [
            (_msg("B"), None, "valid"), (_msg("A"), None, None), (_msg("B"), None, None),
            (_msg("C"), bad, None), (_msg("C"), bad, None), (_msg("D"), None, None)])
    assert [r.new for r in got] == [True, False, False, True, False, True]
    b, a, b2, c1, c2, d = (r.inbox_id for r in got)
    assert a == old.inbox_id
    assert (b2, c2) == (b, c1)
    assert len({a, b, c1, d}) == 4
    rows = _rows(engine)
    assert rows == {a: ("pending", 1), b: ("pending", 1), c1: ("dead", 1), d: ("pending", 0)}
    with engine.connect() as c:
        dead = c.execute(select(t.dead_letter.c.inbox_id, t.dead_letter.c.field)).all()
        iin = c.execute(select(t.inbox.c.iin_status).where(t.inbox.c.id == b)).scalar_one()
    assert [tuple(r) for r in dead] == [(c1, "PID-3")]  # one dead letter, not two
    assert iin == "valid"
    with engine.connect() as c:  # what was written reads back: sealed content, times
        row = c.execute(select(t.inbox).where(t.inbox.c.id == d)).one()
    assert unseal(settings, row) == b"D"
    assert row.message_id == "D"
    assert row.event_time.replace(tzinfo=row.event_time.tzinfo or UTC) == WHEN
    with transaction(engine) as c:  # the whole group again: nothing new, each counted
        again = inbox.receive_group(c, settings, [(_msg(x), None, None) for x in "ABD"])
    assert [(r.inbox_id, r.new) for r in again] == [(a, False), (b, False), (d, False)]
    assert _rows(engine) == {a: ("pending", 2), b: ("pending", 2), c1: ("dead", 1),
                             d: ("pending", 1)}
