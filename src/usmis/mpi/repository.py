"""All SQL of the master patient index.  Rows in, rows out; no matching logic, no crypto."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    Connection,
    Row,
    bindparam,
    delete,
    false,
    func,
    insert,
    select,
    text,
    update,
)

from usmis.kit.db import planned_per_call
from usmis.mpi.tables import block, link, link_event, model, person, review

_CHUNK = 500

# The statements of real-time linking, built once (building and cache-keying a statement
# per call costs more CPU than running it).
_INSERT_PERSON = insert(person)
_INSERT_LINK = insert(link)
_INSERT_EVENT = insert(link_event)
_INSERT_BLOCK = insert(block)
_INSERT_REVIEW = insert(review).returning(review.c.id)
_GET_LINK = select(link).where(link.c.patient_id == bindparam("patient_id"))
_GET_PERSON = select(person).where(person.c.person_key == bindparam("person_key"))


def insert_person(conn: Connection, person_key: str, at: datetime) -> None:
    conn.execute(_INSERT_PERSON, {"person_key": person_key, "status": "active", "created_at": at})


def insert_persons(conn: Connection, keys: Sequence[str], at: datetime) -> None:
    if keys:
        conn.execute(
            insert(person), [{"person_key": k, "status": "active", "created_at": at} for k in keys]
        )


def get_person(conn: Connection, person_key: str) -> Row[Any] | None:
    return conn.execute(_GET_PERSON, {"person_key": person_key}).first()


def set_person_status(
    conn: Connection, person_key: str, status: str, merged_into: str | None = None
) -> None:
    conn.execute(
        update(person)
        .where(person.c.person_key == person_key)
        .values(status=status, merged_into=merged_into)
    )


def get_link(conn: Connection, patient_id: str) -> Row[Any] | None:
    return conn.execute(_GET_LINK, {"patient_id": patient_id}).first()


def linked_patients(conn: Connection, patient_ids: Sequence[str]) -> set[str]:
    """Which of ``patient_ids`` have a link."""
    out: set[str] = set()
    with planned_per_call(conn):  # a generic plan kept scanning the whole table
        for i in range(0, len(patient_ids), _CHUNK):
            chunk = list(patient_ids[i : i + _CHUNK])
            out.update(conn.execute(select(link.c.patient_id).where(
                link.c.patient_id.in_(chunk))).scalars())
    return out


def links_of_person(conn: Connection, person_key: str) -> list[Any]:
    return list(
        conn.execute(
            select(link.c.patient_id, link.c.source_id, link.c.method, link.c.score)
            .where(link.c.person_key == person_key)
            .order_by(link.c.patient_id)
        ).all()
    )


def insert_link(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(_INSERT_LINK, row)


def insert_links(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(link), list(rows))


def update_link(conn: Connection, patient_id: str, **values: Any) -> None:
    conn.execute(update(link).where(link.c.patient_id == patient_id).values(**values))


def move_links(
    conn: Connection, patient_ids: Sequence[str], person_key: str, **values: Any
) -> None:
    for i in range(0, len(patient_ids), _CHUNK):
        chunk = list(patient_ids[i : i + _CHUNK])
        conn.execute(
            update(link).where(link.c.patient_id.in_(chunk)).values(person_key=person_key, **values)
        )


def insert_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(_INSERT_EVENT, list(rows))


def events_of_operation(conn: Connection, operation_id: str) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(link_event)
            .where(link_event.c.operation_id == operation_id)
            .order_by(link_event.c.id)
        ).all()
    )


def history_of_patient(conn: Connection, patient_id: str) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(link_event)
            .where(link_event.c.patient_id == patient_id)
            .order_by(link_event.c.id)
        ).all()
    )


def replace_block_keys(conn: Connection, patient_id: str, keys: Iterable[str]) -> None:
    conn.execute(delete(block).where(block.c.patient_id == patient_id))
    rows = [{"key": k, "patient_id": patient_id} for k in sorted(set(keys))]
    if rows:
        conn.execute(_INSERT_BLOCK, rows)


def insert_block_rows(conn: Connection, rows: Sequence[dict[str, str]]) -> None:
    if rows:
        conn.execute(_INSERT_BLOCK, list(rows))


# How many linked records real-time matching opens and compares at most.  They are the
# ones sharing the *most* blocking keys with the incoming record (a true match shares
# several: IIN, name + date, phone …; a stranger in a big block usually one), so a huge
# block of a common name on a common date costs one index range scan, never thousands
# of decryptions.
CANDIDATE_LIMIT = 100


class CandidateRow(NamedTuple):
    rec: str
    patient_id: str
    person_key: str
    kek_id: str
    dek: bytes
    profile: bytes | None


def candidates(conn: Connection, keys: Sequence[str], *, limit: int = CANDIDATE_LIMIT
               ) -> list[CandidateRow]:
    """Linked source records sharing a blocking key, the ones sharing most keys first,
    with their sealed profiles (at most ``limit``)."""
    return candidates_many(conn, {"": keys}, limit=limit)[""] if keys else []


# The candidates of many records at once (ingest's batch): each record's
# ``limit`` records sharing most keys, best first.  Ranked first, their links fetched in a
# second statement: joined in one, PostgreSQL planned a hash join over the whole link
# table per record while its statistics still said the table was small (a table filling
# during a load: measured 100–250 ms a batch at 2,000 people, 4 ms planned right; and it
# grows with the table).  On PostgreSQL a LATERAL subquery per record ranks its groups
# (one ranking of every record's groups together spilled to disk once the blocks had
# grown); SQLite has no LATERAL: a window over the groups.
_RANKED = {
    "postgresql": text("""
WITH g AS (SELECT e->>0 AS rec, array_agg(e->>1) AS ks
           FROM json_array_elements(CAST(:pairs AS json)) AS e GROUP BY 1)
SELECT g.rec, r.patient_id
FROM g CROSS JOIN LATERAL (
    SELECT b.patient_id, count(*) AS shared FROM mpi_block b WHERE b.key = ANY(g.ks)
    GROUP BY b.patient_id ORDER BY count(*) DESC, b.patient_id LIMIT :limit) r
ORDER BY g.rec, r.shared DESC, r.patient_id
"""),
    "sqlite": text("""
WITH q AS (SELECT json_extract(value, '$[0]') AS rec, json_extract(value, '$[1]') AS key
           FROM json_each(:pairs)),
r AS (SELECT q.rec, b.patient_id, count(*) AS shared, row_number() OVER (
          PARTITION BY q.rec ORDER BY count(*) DESC, b.patient_id) AS n
      FROM q JOIN mpi_block b ON b.key = q.key GROUP BY q.rec, b.patient_id)
SELECT r.rec, r.patient_id FROM r WHERE r.n <= :limit ORDER BY r.rec, r.shared DESC, r.patient_id
"""),
}
_LINKS = {
    "postgresql": text("SELECT patient_id, person_key, kek_id, dek, profile FROM mpi_link "
                       "WHERE patient_id = ANY(CAST(:ids AS VARCHAR[]))"),
    "sqlite": text("SELECT patient_id, person_key, kek_id, dek, profile FROM mpi_link "
                   "WHERE patient_id IN (SELECT value FROM json_each(:ids))"),
}


def candidates_many(conn: Connection, keys_of: dict[str, Sequence[str]], *,
                    limit: int = CANDIDATE_LIMIT) -> dict[str, list[CandidateRow]]:
    """:func:`candidates` of each record (record key → its hashed blocking keys)."""
    pairs = [(rec, k) for rec, ks in keys_of.items() for k in sorted(set(ks))]
    out: dict[str, list[CandidateRow]] = {rec: [] for rec in keys_of}
    if not pairs:
        return out
    pg = conn.dialect.name == "postgresql"
    dialect = "postgresql" if pg else "sqlite"
    # The pairs as one JSON text on both backends (psycopg adapts a list to an array
    # element by element in Python: ~30 times the cost).
    params = {"pairs": orjson.dumps(pairs).decode(), "limit": limit}
    with planned_per_call(conn):
        ranked = conn.execute(_RANKED[dialect], params).all()
        ids = sorted({r.patient_id for r in ranked})
        links = {r.patient_id: r for r in conn.execute(
            _LINKS[dialect], {"ids": ids if pg else orjson.dumps(ids).decode()})} if ids else {}
    for r in ranked:
        ln = links.get(r.patient_id)
        if ln is not None:  # a blocking key without a link (being relinked): not a candidate
            out[r.rec].append(CandidateRow(r.rec, *ln))
    return out


def profiles(conn: Connection, patient_ids: Sequence[str]) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(patient_ids), _CHUNK):
        chunk = list(patient_ids[i : i + _CHUNK])
        out.extend(
            conn.execute(
                select(
                    link.c.patient_id, link.c.person_key, link.c.kek_id, link.c.dek, link.c.profile
                ).where(link.c.patient_id.in_(chunk))
            ).all()
        )
    return out


def all_profiles(conn: Connection, *, batch: int = 5000) -> Iterable[Any]:
    """Every link with its sealed profile, in patient id order, a page at a time."""
    last = ""
    while True:
        rows = conn.execute(
            select(
                link.c.patient_id,
                link.c.person_key,
                link.c.source_id,
                link.c.method,
                link.c.kek_id,
                link.c.dek,
                link.c.profile,
            )
            .where(link.c.patient_id > last)
            .order_by(link.c.patient_id)
            .limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].patient_id


def insert_review(conn: Connection, row: dict[str, Any]) -> int:
    result = conn.execute(_INSERT_REVIEW, row)
    return int(result.scalar_one())


def insert_reviews(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(review), list(rows))


def get_review(conn: Connection, review_id: int) -> Row[Any] | None:
    return conn.execute(select(review).where(review.c.id == review_id)).first()


def list_reviews(conn: Connection, status: str, limit: int, offset: int = 0) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(review)
            .where(review.c.status == status)
            .order_by(review.c.id)
            .limit(limit)
            .offset(offset)
        ).all()
    )


def decide_review(conn: Connection, review_id: int, **values: Any) -> None:
    conn.execute(update(review).where(review.c.id == review_id).values(**values))


def close_open_reviews(conn: Connection, status: str, at: datetime) -> int:
    result = conn.execute(
        update(review).where(review.c.status == "open").values(status=status, decided_at=at)
    )
    return int(result.rowcount or 0)


def close_answered_reviews(
    conn: Connection, person_key: str, merged: Sequence[str], actor: str, at: datetime
) -> int:
    """Mark "obsolete" the open items that ask whether a record of ``person_key`` is one of
    the ``merged`` persons (or of a person merged into them): it is, now."""
    keys = select(person.c.person_key).where(
        person.c.person_key.in_(list(merged)) | person.c.merged_into.in_(list(merged))
    )
    result = conn.execute(
        update(review)
        .where(
            review.c.status == "open",
            review.c.candidate_person_key.in_(keys),
            review.c.patient_id.in_(
                select(link.c.patient_id).where(link.c.person_key == person_key)
            ),
        )
        .values(
            status="obsolete", decided_at=at, decided_by=actor, reason="the persons were merged"
        )
    )
    return int(result.rowcount or 0)


def open_review_between(conn: Connection, a: str, b: str) -> bool:
    """Whether an open item already asks if a record of one of the two persons is the other."""
    stmt = (
        select(review.c.id)
        .join(link, link.c.patient_id == review.c.patient_id)
        .where(
            review.c.status == "open",
            ((link.c.person_key == a) & (review.c.candidate_person_key == b))
            | ((link.c.person_key == b) & (review.c.candidate_person_key == a)),
        )
        .limit(1)
    )
    return conn.execute(stmt).first() is not None


def decided_by_people(conn: Connection, person_keys: Sequence[str], pinned: Iterable[str]) -> bool:
    """Whether a person made a decision about these persons: one of their links has a
    pinned method, or a registrar answered "not-link" for a record of theirs or about
    them as the candidate."""
    keys = list(person_keys)
    pinned_link = select(link.c.patient_id).where(
        link.c.person_key.in_(keys), link.c.method.in_(list(pinned))
    )
    their_records = select(link.c.patient_id).where(link.c.person_key.in_(keys))
    refused = select(review.c.id).where(
        review.c.status == "not-linked",
        (review.c.candidate_person_key.in_(keys)) | (review.c.patient_id.in_(their_records)),
    )
    return (
        conn.execute(pinned_link.limit(1)).first() is not None
        or conn.execute(refused.limit(1)).first() is not None
    )


def latest_model(conn: Connection) -> Row[Any] | None:
    return conn.execute(select(model).order_by(model.c.id.desc()).limit(1)).first()


def latest_model_id(conn: Connection) -> int | None:
    value = conn.execute(select(func.max(model.c.id))).scalar()
    return int(value) if value is not None else None


def insert_model(conn: Connection, params: str, at: datetime) -> int:
    result = conn.execute(insert(model).values(params=params, created_at=at).returning(model.c.id))
    return int(result.scalar_one())


def counts(conn: Connection) -> dict[str, int]:
    def one(stmt: Any) -> int:
        return int(conn.execute(stmt).scalar() or 0)

    return {
        "persons": one(select(func.count()).select_from(person).where(person.c.status == "active")),
        "persons_merged": one(
            select(func.count()).select_from(person).where(person.c.status == "merged")
        ),
        "source_records": one(select(func.count()).select_from(link)),
        "persons_with_records": one(select(func.count(func.distinct(link.c.person_key)))),
        "review_open": one(
            select(func.count()).select_from(review).where(review.c.status == "open")
        ),
        "events": one(select(func.count()).select_from(link_event)),
    }


def links_by_method(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(link.c.method, func.count()).group_by(link.c.method)).all()
    return {r[0]: int(r[1]) for r in rows}


def all_links(conn: Connection) -> list[tuple[str, str, str]]:
    """(patient id, person key, method) of every link."""
    stmt = select(link.c.patient_id, link.c.person_key, link.c.method)
    return [(r[0], r[1], r[2]) for r in conn.execute(stmt)]


def clear_index(conn: Connection) -> None:
    """Drop blocking keys (relink rebuilds them); links and history stay."""
    conn.execute(delete(block))


# Any fixed 64-bit number: the advisory lock that orders concurrent linking transactions.
_LINK_LOCK = 0x5553_4D49_534D_5049  # "USMISMPI"


_PG_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
_SQLITE_LOCK = update(person).where(false()).values(person_key=person.c.person_key)


def lock_linking(conn: Connection) -> None:
    """Hold the linking lock until this transaction ends.

    Deciding a new record's person waits for any other transaction that is deciding one, so
    it sees their persons; records already linked never take it.  PostgreSQL: an advisory
    transaction lock.  SQLite: take the database's write lock now (a write that changes
    nothing), because the driver runs the candidate reads outside a transaction until the
    first write and they would not see a person another connection is about to commit.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(_PG_LOCK, {"k": _LINK_LOCK})
    else:
        conn.execute(_SQLITE_LOCK)
