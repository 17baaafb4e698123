"""All SQL of the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, func, select, update

from usmis.audit import tables as t
from usmis.audit.model import CONTENT_FIELDS, StoredCheckpoint, StoredEntry

# Built once: appends run on every request, statement construction is not free.
_ADVANCE = (
    update(t.head)
    .where(t.head.c.id == 1)
    .values(seq=t.head.c.seq + 1)
    .returning(t.head.c.seq, t.head.c.hash)
)
_CAS_HEAD = (
    update(t.head)
    .where(t.head.c.id == 1, t.head.c.hash == bindparam("prev"))
    .values(seq=t.head.c.seq + 1, hash=bindparam("new"))
    .returning(t.head.c.seq)
)
_SET_HASH = update(t.head).where(t.head.c.id == 1).values(hash=bindparam("h"))
_INSERT_ENTRY = t.entry.insert()
_INSERT_PATIENT = t.patient.insert()


def advance_head(conn: Connection) -> tuple[int, str]:
    """Take the chain head (row lock / SQLite write lock) and return (new seq, prev hash).

    The UPDATE comes first on purpose: it is what serialises concurrent appends, and on
    SQLite it takes the write lock before we read the predecessor.
    """
    row = conn.execute(_ADVANCE).one()
    return int(row[0]), str(row[1])


def swap_head(conn: Connection, prev: str, new: str) -> int | None:
    """Compare-and-swap the head from ``prev`` to ``new`` in one statement; its new seq, or
    None when the head has moved on (another process appended)."""
    row = conn.execute(_CAS_HEAD, {"prev": prev, "new": new}).first()
    return int(row[0]) if row is not None else None


def set_head_hash(conn: Connection, hash_: str) -> None:
    conn.execute(_SET_HASH, {"h": hash_})


def get_head(conn: Connection) -> tuple[int, str]:
    row = conn.execute(select(t.head.c.seq, t.head.c.hash).where(t.head.c.id == 1)).one()
    return int(row.seq), str(row.hash)


def insert_entry(conn: Connection, values: dict[str, Any], patients: list[str]) -> None:
    conn.execute(_INSERT_ENTRY, values)
    if patients:
        conn.execute(_INSERT_PATIENT, [{"seq": values["seq"], "patient_id": p} for p in patients])


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
