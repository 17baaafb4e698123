"""All SQL of the ingest domain (SQLAlchemy Core; the record clocks' lookup takes each
backend's own form of a many-keys join)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Connection, Row, and_, bindparam, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from usmis.ingest import tables as t
from usmis.ingest.model import Source
from usmis.kit.db import FastStatement


def now() -> datetime:
    return datetime.now(UTC)


def _insert(conn: Connection, table: Any) -> Any:
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    return mod.insert(table)


# --- sources -------------------------------------------------------------------------------


def _source(row: Row[Any]) -> Source:
    m = row._mapping
    return Source(
        id=m["id"], name=m["name"], kind=m["kind"], channels=list(m["channels"]),
        formats=list(m["formats"]), mapping=m["mapping"], token_hash=m["token_hash"],
        mllp_peers=list(m["mllp_peers"] or []), mllp_secret_hash=m["mllp_secret_hash"],
        cert_fingerprint=m["cert_fingerprint"], enabled=bool(m["enabled"]),
        created_at=m["created_at"],
    )


def upsert_source(conn: Connection, s: Source) -> None:
    values = {
        "id": s.id, "name": s.name, "kind": s.kind, "channels": s.channels,
        "formats": s.formats, "mapping": s.mapping, "token_hash": s.token_hash,
        "mllp_peers": s.mllp_peers, "mllp_secret_hash": s.mllp_secret_hash,
        "cert_fingerprint": s.cert_fingerprint, "enabled": s.enabled,
        "created_at": s.created_at or now(),
    }
    stmt = _insert(conn, t.source).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"], set_={k: v for k, v in values.items() if k != "created_at"}
    )
    conn.execute(stmt)


# Built once (every REST post asks): a select made per call cost a third more on
# PostgreSQL, three times as much on SQLite.
_GET_SOURCE = select(t.source).where(t.source.c.id == bindparam("source_id"))


def get_source(conn: Connection, source_id: str) -> Source | None:
    row = conn.execute(_GET_SOURCE, {"source_id": source_id}).first()
    return _source(row) if row else None


def list_sources(conn: Connection) -> list[Source]:
    return [_source(r) for r in conn.execute(select(t.source).order_by(t.source.c.id))]


def set_source_enabled(conn: Connection, source_id: str, enabled: bool) -> bool:
    res = conn.execute(
        update(t.source).where(t.source.c.id == source_id).values(enabled=enabled)
    )
    return bool(res.rowcount)


def set_source_token_hash(conn: Connection, source_id: str, token_hash: str) -> bool:
    res = conn.execute(
        update(t.source).where(t.source.c.id == source_id).values(token_hash=token_hash)
    )
    return bool(res.rowcount)


# --- inbox ---------------------------------------------------------------------------------


# What inbox.receive writes for a message (the rest of the row starts empty or zero).
_MESSAGE_COLUMNS = ("source_id", "channel", "format", "message_id", "content", "kek_id",
                    "dek", "content_hash", "context", "event_time", "received_at", "status",
                    "iin_status")


def _insert_message_statement(mod: Any) -> FastStatement:
    # Built once: a statement made per call from its values (its SQL then converted again
    # by the driver each time) was most of a channel's time per message.
    return FastStatement(
        mod.insert(t.inbox)
        .values({**{c: bindparam(c, type_=t.inbox.c[c].type) for c in _MESSAGE_COLUMNS},
                 "attempts": 0, "duplicates": 0})
        .on_conflict_do_update(index_elements=["source_id", "content_hash"],
                               set_={"duplicates": t.inbox.c.duplicates + 1})
        .returning(t.inbox.c.id, t.inbox.c.duplicates))


_INSERT_MESSAGE = {"postgresql": _insert_message_statement(postgresql),
                   "sqlite": _insert_message_statement(sqlite)}


def insert_message(conn: Connection, values: dict[str, Any]) -> tuple[int, bool]:
    """Insert one message (``values``: its ``_MESSAGE_COLUMNS``); an identical one (same
    source, same hash) only counts a duplicate.

    Returns (inbox id, True if new).
    """
    row = _INSERT_MESSAGE[conn.dialect.name].run(conn, values)[0]
    return int(row[0]), row[1] == 0


def _messages_from_json(on_conflict: str, returning: str) -> FastStatement:
    # Many inbox rows in one statement, given as one JSON array (bytes as hex, each row with
    # an ``extra``: its copies in the batch less one).  One short statement, converted and
    # planned once whatever the number of rows (SQLAlchemy's multi-row VALUES re-parsed 13
    # parameters a row: ~100 µs of client CPU a row; one array a column, as psycopg dumps a
    # list element by element in Python, was still a tenth of a listener's CPU).
    types = {"content": "text", "dek": "text", "context": "json", "event_time": "timestamptz",
             "received_at": "timestamptz"}
    cols = ", ".join(_MESSAGE_COLUMNS)
    return FastStatement(text(
        f"INSERT INTO ingest_inbox ({cols}, attempts, duplicates) SELECT "
        + ", ".join(f"decode(r.{c}, 'hex')" if c in ("content", "dek") else f"r.{c}"
                    for c in _MESSAGE_COLUMNS)
        + ", 0, r.extra FROM json_to_recordset(CAST(:rows AS json)) AS r("
        + ", ".join(f"{c} {types.get(c, 'text')}" for c in _MESSAGE_COLUMNS)
        + f", extra integer) ON CONFLICT (source_id, content_hash) {on_conflict}"
        f" RETURNING {returning}"))


def _json_rows(rows: Sequence[dict[str, Any]], extra: Sequence[int]) -> str:
    return orjson.dumps([{
        **r, "content": r["content"].hex(), "dek": r["dek"].hex() if r["dek"] else None,
        "extra": n} for r, n in zip(rows, extra, strict=True)]).decode()


_INSERT_MESSAGES_PG = _messages_from_json("DO NOTHING", "id")
# An existing row counts every copy; a new one starts with its extra copies as duplicates.
_UPSERT_MESSAGES_PG = _messages_from_json(
    "DO UPDATE SET duplicates = ingest_inbox.duplicates + excluded.duplicates + 1",
    "id, source_id, content_hash, duplicates")


def insert_messages(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[tuple[int, bool]]:
    """:func:`insert_message` of each row, in one statement on PostgreSQL (a listener's
    group commit: a statement a message was ~a fifth of the listener's CPU).  A message
    that comes twice in ``rows`` is new the first time at most, as one at a time."""
    if conn.dialect.name != "postgresql" or len(rows) < 2:
        return [insert_message(conn, r) for r in rows]
    copies: dict[tuple[str, str], int] = {}
    unique = []
    for r in rows:
        key = (r["source_id"], r["content_hash"])
        if key not in copies:
            copies[key] = 0
            unique.append(r)
        copies[key] += 1
    batch = _json_rows(unique, [copies[(r["source_id"], r["content_hash"])] - 1
                                for r in unique])
    stored = {(sid, h): (int(rid), dups) for rid, sid, h, dups in
              _UPSERT_MESSAGES_PG.run(conn, {"rows": batch})}
    out = []
    seen: set[tuple[str, str]] = set()
    for r in rows:
        key = (r["source_id"], r["content_hash"])
        rid, dups = stored[key]
        # Inserted now: its duplicates are exactly its extra copies (an existing row's
        # count grew by all of them, past that).
        out.append((rid, key not in seen and dups == copies[key] - 1))
        seen.add(key)
    return out


def insert_messages_bulk(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Bulk insert (file rows); already-present ones are skipped.  Returns rows inserted."""
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        return len(_INSERT_MESSAGES_PG.run(conn, {"rows": _json_rows(rows, [0] * len(rows))}))
    stmt = _insert(conn, t.inbox).on_conflict_do_nothing(
        index_elements=["source_id", "content_hash"]
    ).returning(t.inbox.c.id)
    full = [{**r, "attempts": 0, "duplicates": 0} for r in rows]
    # RETURNING yields only the rows actually inserted (conflicts return nothing), which is
    # exact on both backends where executemany's rowcount is not.
    return len(conn.execute(stmt, full).all())


def claim_window(limit: int) -> int:
    """How many ids from the oldest pending one a claim of ``limit`` looks at first."""
    return max(1000, 20 * limit)


@cache
def _claim(limit: int, window: int, lock: bool = True) -> Any:
    q = select(t.inbox).where(t.inbox.c.status == "pending")
    if window:
        oldest = (select(func.min(t.inbox.c.id)).where(t.inbox.c.status == "pending")
                  .scalar_subquery())
        q = q.where(t.inbox.c.id >= oldest, t.inbox.c.id < oldest + window)
    q = q.order_by(t.inbox.c.id).limit(limit)
    return q.with_for_update(skip_locked=True) if lock else q


def claim_pending(conn: Connection, limit: int, *, skip_locked: bool) -> list[Row[Any]]:
    """The oldest pending messages, locked for this transaction (PostgreSQL: SKIP LOCKED).

    PostgreSQL looks in a window of ids from the oldest pending message on: planned
    without statistics (a table filling faster than it is analysed, or a plan kept from
    when it was small), the plain query read and sorted *every* pending message to lock
    100 — 24 ms with 10,000 waiting, spilling to disk, and growing with the backlog;
    windowed, 0.2 ms whatever the backlog.  Should the window hold nothing this worker can
    lock (the others hold it), the plain query answers."""
    if not skip_locked:
        return list(conn.execute(_claim(limit, 0, lock=False)))
    rows = list(conn.execute(_claim(limit, claim_window(limit))))
    return rows or list(conn.execute(_claim(limit, 0)))


def get_message(conn: Connection, inbox_id: int) -> Row[Any] | None:
    return conn.execute(select(t.inbox).where(t.inbox.c.id == inbox_id)).first()


def finish_message(
    conn: Connection, inbox_id: int, *, status: str, stored: int | None,
    iin_status: str | None, event_time: datetime | None,
) -> None:
    values: dict[str, Any] = {"status": status, "stored": stored, "processed_at": now()}
    if iin_status is not None:
        values["iin_status"] = iin_status
    if event_time is not None:
        values["event_time"] = event_time
    params = {"p_" + k: v for k, v in values.items()}
    conn.execute(_finish_stmt(tuple(values)), {"id_": inbox_id, **params})


def finish_messages(conn: Connection, items: Sequence[tuple[int, int, str | None,
                                                           datetime | None]]) -> None:
    """Mark many messages done (inbox id, stored, iin_status, event_time), at a batch's end:
    one statement on PostgreSQL; on SQLite one executemany per column set."""
    ts = now()
    if conn.dialect.name == "postgresql" and items:
        _FINISH_PG.run(conn, {"ts": ts, "rows": orjson.dumps(
            [{"id": i, "stored": n, "iin": iin, "at": at} for i, n, iin, at in items]).decode()})
        return
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for inbox_id, stored, iin_status, event_time in items:
        values: dict[str, Any] = {"status": "done", "stored": stored, "processed_at": ts}
        if iin_status is not None:
            values["iin_status"] = iin_status
        if event_time is not None:
            values["event_time"] = event_time
        params = {"p_" + k: v for k, v in values.items()}
        groups.setdefault(tuple(values), []).append({"id_": inbox_id, **params})
    for names, rows in groups.items():
        conn.execute(_finish_stmt(names), rows)


# PostgreSQL: the batch's messages in one statement (an executemany had cost ~20 µs of
# client CPU a message).  A null IIN status or event time keeps the stored one.  The rows
# travel as one JSON text (orjson, in C): psycopg adapts a list to an array element by
# element in Python, ~1 µs a text and ~3.5 µs a timestamp — 30 times the JSON's cost.
_FINISH_PG = FastStatement(text(
    "UPDATE ingest_inbox SET status = 'done', stored = u.stored, processed_at = :ts,"
    " attempts = attempts + 1, iin_status = coalesce(u.iin, iin_status),"
    " event_time = coalesce(u.at, event_time)"
    " FROM json_to_recordset(CAST(:rows AS json)) AS u(id bigint, stored int, iin text,"
    " at timestamptz) WHERE ingest_inbox.id = u.id"))

# Built once per column set: every batch runs one (building a statement cost more than
# running it).
_FINISH: dict[tuple[str, ...], Any] = {}


def _finish_stmt(names: tuple[str, ...]) -> Any:
    stmt = _FINISH.get(names)
    if stmt is None:
        vals: dict[str, Any] = {k: bindparam("p_" + k) for k in names}
        vals["attempts"] = t.inbox.c.attempts + 1
        stmt = _FINISH[names] = (
            update(t.inbox).where(t.inbox.c.id == bindparam("id_")).values(vals)
        )
    return stmt


def requeue(conn: Connection, inbox_id: int, content: bytes | None = None) -> None:
    values: dict[str, Any] = {"status": "pending", "processed_at": None}
    if content is not None:
        values["content"] = content
    conn.execute(update(t.inbox).where(t.inbox.c.id == inbox_id).values(**values))


def replace_content(conn: Connection, inbox_id: int, *, content_hash: str, content: object,
                    kek_id: object, dek: object) -> None:
    conn.execute(update(t.inbox).where(t.inbox.c.id == inbox_id).values(
        content_hash=content_hash, content=content, kek_id=kek_id, dek=dek))


def inbox_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(t.inbox.c.status, func.count()).group_by(t.inbox.c.status))
    return {r[0]: int(r[1]) for r in rows}


def pending_count(conn: Connection) -> int:
    """Messages waiting for a worker (a range of the status index, not the whole inbox)."""
    return int(conn.execute(select(func.count()).select_from(t.inbox)
                            .where(t.inbox.c.status == "pending")).scalar_one())


def has_pending(conn: Connection) -> bool:
    """Is any message waiting?  Stops at the first (counting 10,000 waiting messages took
    ~3 ms, a few per cent of a core for a caller polling ten times a second)."""
    pending = select(t.inbox.c.id).where(t.inbox.c.status == "pending")
    return bool(conn.execute(select(pending.exists())).scalar_one())


# --- files ---------------------------------------------------------------------------------


def insert_file(
    conn: Connection, *, source_id: str, name: str, content_hash: str,
    header: list[str] | None, rows: int,
) -> tuple[int, bool]:
    """Register a delivered file; the same bytes again return the earlier id (False)."""
    found = conn.execute(select(t.file.c.id).where(
        t.file.c.source_id == source_id, t.file.c.content_hash == content_hash)).first()
    if found:
        return int(found[0]), False
    res = conn.execute(t.file.insert().values(
        source_id=source_id, name=name[:300], content_hash=content_hash, header=header,
        rows=rows, received_at=now()).returning(t.file.c.id))
    return int(res.scalar_one()), True


def set_file_rows(conn: Connection, file_id: int, rows: int) -> None:
    conn.execute(update(t.file).where(t.file.c.id == file_id).values(rows=rows))


def file_header(conn: Connection, file_id: int) -> list[str] | None:
    row = conn.execute(select(t.file.c.header).where(t.file.c.id == file_id)).first()
    return list(row[0]) if row and row[0] is not None else None


def stored_resources(conn: Connection) -> int:
    """Resources written by ingestion (sum over done messages)."""
    return int(conn.execute(select(func.coalesce(func.sum(t.inbox.c.stored), 0))).scalar_one())


# --- dead letters --------------------------------------------------------------------------


def insert_dead_letter(
    conn: Connection, *, inbox_id: int, source_id: str, rule: str, field: str, detail: str
) -> int:
    res = conn.execute(
        t.dead_letter.insert().values(
            inbox_id=inbox_id, source_id=source_id, rule=rule[:60], field=field[:120],
            detail=detail[:2000], created_at=now(), status="open",
        ).returning(t.dead_letter.c.id)
    )
    return int(res.scalar_one())


def list_dead_letters(
    conn: Connection, *, source_id: str | None = None, rule: str | None = None,
    status: str | None = "open", limit: int = 100, after_id: int = 0,
) -> list[Row[Any]]:
    conds = [t.dead_letter.c.id > after_id]
    if source_id:
        conds.append(t.dead_letter.c.source_id == source_id)
    if rule:
        conds.append(t.dead_letter.c.rule == rule)
    if status:
        conds.append(t.dead_letter.c.status == status)
    q = (
        select(t.dead_letter, t.inbox.c.message_id, t.inbox.c.channel, t.inbox.c.format,
               t.inbox.c.received_at)
        .join(t.inbox, t.inbox.c.id == t.dead_letter.c.inbox_id)
        .where(and_(*conds)).order_by(t.dead_letter.c.id).limit(limit)
    )
    return list(conn.execute(q))


def get_dead_letter(conn: Connection, dl_id: int) -> Row[Any] | None:
    return conn.execute(select(t.dead_letter).where(t.dead_letter.c.id == dl_id)).first()


def close_dead_letters(conn: Connection, inbox_id: int, status: str) -> None:
    conn.execute(
        update(t.dead_letter)
        .where(t.dead_letter.c.inbox_id == inbox_id, t.dead_letter.c.status == "open")
        .values(status=status, resolved_at=now())
    )


def dead_letter_summary(conn: Connection) -> list[Row[Any]]:
    q = (
        select(t.dead_letter.c.source_id, t.dead_letter.c.rule, t.dead_letter.c.field,
               func.count())
        .where(t.dead_letter.c.status == "open")
        .group_by(t.dead_letter.c.source_id, t.dead_letter.c.rule, t.dead_letter.c.field)
        .order_by(t.dead_letter.c.source_id, func.count().desc())
    )
    return list(conn.execute(q))


# --- merges and record clocks --------------------------------------------------------------


def record_merge(
    conn: Connection, *, source_id: str, survivor: str, merged: str, inbox_id: int,
    event_time: datetime | None,
) -> None:
    stmt = _insert(conn, t.merge).values(
        source_id=source_id, survivor_patient=survivor, merged_patient=merged,
        inbox_id=inbox_id, event_time=event_time, created_at=now(),
    ).on_conflict_do_nothing(index_elements=["inbox_id"])
    conn.execute(stmt)


def list_merges(conn: Connection, after_id: int = 0, limit: int = 1000) -> list[Row[Any]]:
    return list(conn.execute(
        select(t.merge).where(t.merge.c.id > after_id).order_by(t.merge.c.id).limit(limit)
    ))


Clock = tuple[datetime, int]  # a record's newest applied state: (event time, inbox id)


# A primary-key probe per pair: the LIMIT keeps the LATERAL subquery from being flattened
# into a join, which PostgreSQL planned as a hash join scanning the whole table (11 ms a
# batch at 40,000 clocks, and growing; 0.4 ms probed).  The pairs come as one JSON text on
# either backend (cheaper to send than arrays: see _FINISH_PG).
_CLOCKS_PG = text(
    "SELECT c.source_id, c.record_key, c.event_time, c.inbox_id"
    " FROM json_array_elements(CAST(:pairs AS json)) AS k"
    " CROSS JOIN LATERAL (SELECT * FROM ingest_record_clock"
    " WHERE source_id = k->>0 AND record_key = k->>1 LIMIT 1) AS c")
# SQLite does not use an index for a row-value IN (it scans the table): the pairs come as a
# JSON array joined through json_each, which probes the primary key per pair.
_CLOCKS_SQLITE = text(
    "SELECT c.source_id, c.record_key, c.event_time, c.inbox_id FROM json_each(:pairs) AS k"
    " JOIN ingest_record_clock c ON c.source_id = json_extract(k.value, '$[0]')"
    " AND c.record_key = json_extract(k.value, '$[1]')")


def read_clocks(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Clock]:
    """The clocks of (source id, record key) pairs, in one statement (missing: never seen)."""
    pairs = sorted(set(keys))
    if not pairs:
        return {}
    stmt = _CLOCKS_PG if conn.dialect.name == "postgresql" else _CLOCKS_SQLITE
    rows = conn.execute(stmt, {"pairs": orjson.dumps(pairs).decode()})
    out: dict[tuple[str, str], Clock] = {}
    for src, key, when, inbox_id in rows:
        if isinstance(when, str):  # SQLite through a text() statement: the stored string
            when = datetime.fromisoformat(when)
        out[(src, key)] = (when if when.tzinfo else when.replace(tzinfo=UTC), int(inbox_id))
    return out


def newer(clock: Clock | None, event_time: datetime, inbox_id: int) -> bool:
    """Does a message (event time, inbox id) carry a newer state than ``clock``?  The later
    event wins; for equal times, the later message (and the same one again, replayed)."""
    return clock is None or clock[0] < event_time or (
        clock[0] == event_time and clock[1] <= inbox_id)


def write_clocks(conn: Connection, clocks: dict[tuple[str, str], Clock]) -> None:
    """Upsert the given clocks (the caller holds their records' locks and read them first,
    so each only moves forward): one statement on PostgreSQL, else one executemany."""
    if clocks and conn.dialect.name == "postgresql":
        _CLOCKS_UPSERT_PG.run(conn, {"rows": orjson.dumps([
            {"s": src, "k": key, "t": when, "i": inbox_id}
            for (src, key), (when, inbox_id) in sorted(clocks.items())]).decode()})
    elif clocks:
        conn.execute(_clock_upsert(conn.dialect.name), [
            {"source_id": src, "record_key": key, "event_time": when, "inbox_id": inbox_id}
            for (src, key), (when, inbox_id) in sorted(clocks.items())])


_CLOCKS_UPSERT_PG = FastStatement(text(
    "INSERT INTO ingest_record_clock (source_id, record_key, event_time, inbox_id)"
    " SELECT * FROM json_to_recordset(CAST(:rows AS json))"
    " AS u(s text, k text, t timestamptz, i bigint)"
    " ON CONFLICT (source_id, record_key) DO UPDATE"
    " SET event_time = excluded.event_time, inbox_id = excluded.inbox_id"))


@cache
def _clock_upsert(dialect: str) -> Any:
    ins = (postgresql if dialect == "postgresql" else sqlite).insert(t.record_clock)
    return ins.on_conflict_do_update(
        index_elements=["source_id", "record_key"],
        set_={"event_time": ins.excluded.event_time, "inbox_id": ins.excluded.inbox_id})


# --- quality -------------------------------------------------------------------------------


def quality_rows(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per-source volumes, statuses, IIN shares, duplicates and arrival delay (seconds)."""
    i = t.inbox
    q = select(
        i.c.source_id, i.c.status, i.c.iin_status, func.count(), func.sum(i.c.duplicates),
        func.sum(i.c.stored),
    ).group_by(i.c.source_id, i.c.status, i.c.iin_status)
    out: dict[str, dict[str, Any]] = {}
    for src, status, iin, n, dups, stored in conn.execute(q):
        d = out.setdefault(src, {"messages": 0, "by_status": {}, "iin": {}, "duplicates": 0,
                                 "resources": 0})
        d["messages"] += int(n)
        d["by_status"][status] = d["by_status"].get(status, 0) + int(n)
        if iin:
            d["iin"][iin] = d["iin"].get(iin, 0) + int(n)
        d["duplicates"] += int(dups or 0)
        d["resources"] += int(stored or 0)
    delays = select(i.c.source_id, i.c.received_at, i.c.event_time).where(
        i.c.event_time.is_not(None)
    )
    acc: dict[str, list[float]] = {}
    for src, received, event in conn.execute(delays):
        if received.tzinfo is None:
            received = received.replace(tzinfo=UTC)
        if event.tzinfo is None:
            event = event.replace(tzinfo=UTC)
        acc.setdefault(src, []).append((received - event).total_seconds())
    for src, values in acc.items():
        values.sort()
        d = out.setdefault(src, {"messages": 0, "by_status": {}, "iin": {}, "duplicates": 0,
                                 "resources": 0})
        d["delay_seconds"] = {
            "median": values[len(values) // 2],
            "p95": values[min(len(values) - 1, int(len(values) * 0.95))],
            "max": values[-1],
        }
    return out
