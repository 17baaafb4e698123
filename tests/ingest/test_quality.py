"""The per-source quality report over messages sent through the real listener: IIN
shares, exact re-deliveries and the delay between the source's event and arrival."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hl7.client import MLLPClient
from sqlalchemy import Engine

from usmis.ingest import quality

from .conftest import Listener
from .factories import make_adt, make_iin


def test_report_counts_iin_shares_duplicates_and_delay(
    mllp: Listener, hl7_sources: dict[str, str], engine: Engine
) -> None:
    valid = make_iin()
    invalid = valid[:-1] + str((int(valid[-1]) + 1) % 10)  # checksum broken
    now = datetime.now(UTC)

    def at(hours: int) -> str:  # an event time `hours` ago, in the source's own words
        return (now - timedelta(hours=hours)).strftime("%Y%m%d%H%M%S+0000")

    first = make_adt(control="Q1", patient="P1", iin=valid, event_time=at(1))
    with MLLPClient("127.0.0.1", mllp.port) as client:
        for msg in (
            first,
            make_adt(control="Q2", patient="P2", iin=invalid, event_time=at(2)),
            make_adt(control="Q3", patient="P3", iin=None, event_time=at(30)),
            first,  # the same message again: a duplicate, not a new message
        ):
            assert b"MSA|A" in client.send_message(msg)
    with engine.connect() as conn:
        q = quality.report(conn)["his-test"]
        assert quality.report(conn, "lis-test")["lis-test"]["messages"] == 0
    assert q["messages"] == 3
    assert (q["duplicates"], q["duplicate_share"]) == (1, 0.25)
    assert {k: q["iin"][k] for k in ("with_person", "valid", "missing", "invalid")} == {
        "with_person": 3, "valid": 1, "missing": 1, "invalid": 1}
    assert q["iin"]["missing_share"] == q["iin"]["invalid_share"] == 0.3333
    delay = q["delay_seconds"]
    assert 2 * 3600 <= delay["median"] < 2 * 3600 + 120
    assert 30 * 3600 <= delay["max"] < 30 * 3600 + 120
