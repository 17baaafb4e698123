"""Resource ids and instants as the store writes them."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

from usmis.fhir import model


def test_new_ids_are_version_7_uuids_in_creation_order() -> None:
    before = time.time_ns() // 1_000_000
    first = [model.new_id() for _ in range(2000)]
    time.sleep(0.002)
    later = model.new_id()
    after = time.time_ns() // 1_000_000
    assert len(set(first)) == len(first)
    for i in [*first, later]:
        u = uuid.UUID(i)
        assert str(u) == i  # canonical lower-case form, a valid FHIR id
        assert (u.version, u.variant) == (7, uuid.RFC_4122)
        assert before <= u.int >> 80 <= after  # the leading 48 bits: ms since the epoch
    # Later milliseconds sort later (within one millisecond the order is random).
    assert max(first) < later
    # The 74 random bits do vary.
    assert len({i[-12:] for i in first}) == len(first)


def test_instant_is_utc_with_milliseconds() -> None:
    aware = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=5)))
    assert model.instant(aware) == "2026-01-01T22:04:05.678Z"
    assert model.instant(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", model.instant(datetime.now(UTC)))
