"""All SQL of the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from sqlalchemy import Connection, RowMapping, func, select, text

from usmis.audit import tables as t
from usmis.audit.model import CONTENT_FIELDS, StoredCheckpoint, StoredEntry
from usmis.kit.db import FastStatement

# Built once: appends run on every request, statement construction is not free.
_ADVANCE = FastStatement(text("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 "
                               "RETURNING seq, hash"))
_ENTRY_COLUMNS = (*CONTENT_FIELDS, "prev_hash", "hash")
_COLS = ", ".join(f'"{c}"' for c in _ENTRY_COLUMNS)
_VALS = ", ".join(f":{c}" for c in _ENTRY_COLUMNS)


def advance_head(conn: Connection) -> tuple[int, str]:
    """Take the chain head (row lock / SQLite write lock) and return (new seq, prev hash).

    The UPDATE comes first on purpose: it is what serialises concurrent appends, and on
    SQLite it takes the write lock before we read the predecessor.
    """
    seq, hash_ = _ADVANCE.run(conn, {})[0]
    return int(seq), str(hash_)


_ADVANCE_BY = FastStatement(text(
    "UPDATE audit_head SET seq = seq + :n WHERE id = 1 RETURNING seq, hash"))


def advance_head_by(conn: Connection, n: int) -> tuple[int, str]:
    """Take the chain head and reserve ``n`` seqs: (the first of them, its predecessor's
    hash)."""
    seq, hash_ = _ADVANCE_BY.run(conn, {"n": n})[0]
    return int(seq) - n + 1, str(hash_)


def insert_entries(conn: Connection, entries: list[dict[str, Any]],
                   patients: list[dict[str, Any]], spool: tuple[str, int]) -> None:
    """Many entries, their patient index rows and the spool's new mark ``(name, offset)``
    in one statement: the rows go as one JSON parameter (an executemany of them cost
    ~0.2 ms of client CPU per entry)."""
    params = {"entries": orjson.dumps(entries).decode(), "patients":
              orjson.dumps(patients).decode(), "spool": spool[0], "offset": spool[1]}
    if conn.dialect.name == "postgresql":
        _PG_INSERT_MANY.run(conn, params)
    else:
        _SQLITE_ENTRIES.run(conn, params)
        _SQLITE_PATIENTS.run(conn, params)
        _SPOOL_MARK.run(conn, params)


_MARK = ('INSERT INTO audit_spool (name, "offset") VALUES (:spool, :offset) '
         'ON CONFLICT (name) DO UPDATE SET "offset" = excluded."offset"')
_SPOOL_MARK = FastStatement(text(_MARK))
_PG_INSERT_MANY = FastStatement(text(
    f"WITH e AS (INSERT INTO audit_entry (seq, {_COLS}) SELECT seq, {_COLS} FROM "
    "json_populate_recordset(NULL::audit_entry, CAST(:entries AS JSON))), "
    "p AS (INSERT INTO audit_patient (seq, patient_id) SELECT seq, patient_id FROM "
    "json_populate_recordset(NULL::audit_patient, CAST(:patients AS JSON))) " + _MARK
))
_SQLITE_ENTRIES = FastStatement(text(
    f"INSERT INTO audit_entry (seq, {_COLS}) SELECT "
    + ", ".join(f"json_extract(value, '$.{c}')" for c in ("seq", *_ENTRY_COLUMNS))
    + " FROM json_each(:entries)"
))
_SQLITE_PATIENTS = FastStatement(text(
    "INSERT INTO audit_patient (seq, patient_id) SELECT json_extract(value, '$.seq'), "
    "json_extract(value, '$.patient_id') FROM json_each(:patients)"
))


def spool_offset(conn: Connection, name: str) -> int:
    """How far the spool file ``name`` has reached the chain (0: not at all)."""
    row = conn.execute(select(t.spool.c.offset).where(t.spool.c.name == name)).first()
    return int(row[0]) if row else 0


def drop_spool(conn: Connection, name: str) -> None:
    conn.execute(t.spool.delete().where(t.spool.c.name == name))


_SET_HASH = FastStatement(text("UPDATE audit_head SET hash = :h WHERE id = 1"))


def set_head_hash(conn: Connection, hash_: str) -> None:
    _SET_HASH.run(conn, {"h": hash_})


def get_head(conn: Connection) -> tuple[int, str]:
    row = conn.execute(select(t.head.c.seq, t.head.c.hash).where(t.head.c.id == 1)).one()
    return int(row.seq), str(row.hash)




def _pg_append(head: str) -> FastStatement:
    """PostgreSQL: move the head, insert the entry and its patient index in ONE statement
    (data-modifying CTEs), so an append costs one round trip."""
    return FastStatement(text(
        f"WITH h AS ({head}), "
        f"e AS (INSERT INTO audit_entry (seq, {_COLS}) SELECT h.seq, {_VALS} FROM h "
        "RETURNING seq), "
        "p AS (INSERT INTO audit_patient (seq, patient_id) "
        "SELECT e.seq, x FROM e CROSS JOIN unnest(CAST(:patient_index AS VARCHAR[])) AS x) "
        "SELECT seq FROM e"
    ))


# Compare-and-swap: only if the head is still ``prev_hash`` (no row: it moved on).
_PG_SWAP_APPEND = _pg_append(
    "UPDATE audit_head SET seq = seq + 1, hash = :hash WHERE id = 1 AND hash = :prev_hash "
    "RETURNING seq"
)
# After advance_head took the row: its seq is already ours, set the hash.
_PG_LOCKED_APPEND = _pg_append("UPDATE audit_head SET hash = :hash WHERE id = 1 RETURNING seq")
# SQLite (no writable CTEs; statements are in-process calls, not round trips).
_SWAP = FastStatement(text(
    "UPDATE audit_head SET seq = seq + 1, hash = :hash WHERE id = 1 AND hash = :prev_hash "
    "RETURNING seq"))
_ENTRY = FastStatement(text(f"INSERT INTO audit_entry (seq, {_COLS}) VALUES (:seq, {_VALS})"))
_PATIENTS = FastStatement(text(
    "INSERT INTO audit_patient (seq, patient_id) SELECT :seq, value FROM json_each(:patients)"))


def swap_append(conn: Connection, values: dict[str, Any], patients: list[str]) -> int | None:
    """Append if the head is still ``values["prev_hash"]``: the entry's seq, or None when
    another writer moved the head (then nothing was written)."""
    if conn.dialect.name == "postgresql":
        rows = _PG_SWAP_APPEND.run(conn, {**values, "patient_index": patients})
        return int(rows[0][0]) if rows else None
    rows = _SWAP.run(conn, {"hash": values["hash"], "prev_hash": values["prev_hash"]})
    if not rows:
        return None
    seq = int(rows[0][0])
    _insert_sqlite(conn, seq, values, patients)
    return seq


def locked_append(conn: Connection, seq: int, values: dict[str, Any], patients: list[str]
                  ) -> None:
    """Append entry ``seq`` after :func:`advance_head` gave it (the head row is ours)."""
    if conn.dialect.name == "postgresql":
        if not _PG_LOCKED_APPEND.run(conn, {**values, "patient_index": patients}):
            raise RuntimeError("the audit chain head disappeared")
        return
    set_head_hash(conn, values["hash"])
    _insert_sqlite(conn, seq, values, patients)


def _insert_sqlite(conn: Connection, seq: int, values: dict[str, Any], patients: list[str]
                   ) -> None:
    _ENTRY.run(conn, {**values, "seq": seq})
    if patients:
        # The content's "patients" is the same sorted list as JSON.
        _PATIENTS.run(conn, {"seq": seq, "patients": values["patients"]})


def insert_checkpoint(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(t.checkpoint.insert().values(**values))


def iter_entries(conn: Connection, batch: int = 2000) -> Iterator[StoredEntry]:
    """Every entry in seq order, streamed in keyset pages."""
    last: int | None = None
    while True:
        q = select(t.entry).order_by(t.entry.c.seq).limit(batch)
        if last is not None:
            q = q.where(t.entry.c.seq > last)
        rows = conn.execute(q).mappings().all()
        if not rows:
            return
        for r in rows:
            yield StoredEntry(
                int(r["seq"]),
                {k: r[k] for k in CONTENT_FIELDS},
                str(r["prev_hash"]),
                str(r["hash"]),
            )
        last = int(rows[-1]["seq"])


def seq_of_hash(conn: Connection, hash_: str) -> int | None:
    row = conn.execute(select(t.entry.c.seq).where(t.entry.c.hash == hash_).limit(1)).first()
    return int(row.seq) if row else None


def checkpoints(conn: Connection) -> list[StoredCheckpoint]:
    return [
        StoredCheckpoint(int(r.seq), r.hash, r.signed_at, r.kid, r.signature)
        for r in conn.execute(select(t.checkpoint).order_by(t.checkpoint.c.seq))
    ]


def iter_patient_index(conn: Connection) -> Iterator[tuple[int, str]]:
    for r in conn.execute(
        select(t.patient.c.seq, t.patient.c.patient_id).order_by(
            t.patient.c.seq, t.patient.c.patient_id
        )
    ):
        yield int(r.seq), str(r.patient_id)


def entries_for_patients(
    conn: Connection, patient_ids: list[str], *, limit: int = 200, before: int | None = None
) -> list[RowMapping]:
    seqs = select(t.patient.c.seq).where(t.patient.c.patient_id.in_(patient_ids))
    q = select(t.entry).where(t.entry.c.seq.in_(seqs)).order_by(t.entry.c.seq.desc()).limit(limit)
    if before is not None:
        q = q.where(t.entry.c.seq < before)
    return list(conn.execute(q).mappings())


def get_entry(conn: Connection, seq: int) -> RowMapping | None:
    return conn.execute(select(t.entry).where(t.entry.c.seq == seq)).mappings().first()


def search_entries(
    conn: Connection,
    *,
    patient_ids: list[str] | None = None,
    subject: str | None = None,
    action: str | None = None,
    emergency: bool | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[RowMapping], int]:
    conds: list[Any] = []
    if patient_ids is not None:
        conds.append(
            t.entry.c.seq.in_(select(t.patient.c.seq).where(t.patient.c.patient_id.in_(patient_ids)))
        )
    if subject is not None:
        conds.append(t.entry.c.subject == subject)
    if action is not None:
        conds.append(t.entry.c.action == action)
    if emergency is not None:
        conds.append(t.entry.c.emergency == emergency)
    if since is not None:
        conds.append(t.entry.c.recorded >= since)
    if until is not None:
        conds.append(t.entry.c.recorded < until)
    total = int(conn.execute(select(func.count()).select_from(t.entry).where(*conds)).scalar_one())
    rows = conn.execute(
        select(t.entry).where(*conds).order_by(t.entry.c.seq.desc()).limit(limit).offset(offset)
    ).mappings()
    return list(rows), total
