"""All SQL of the oversight domain (SQLAlchemy Core; SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from usmis.kit.crypto import Keyring
from usmis.oversight.model import RuleFeedback
from usmis.oversight.tables import (
    oversight_case,
    oversight_case_finding,
    oversight_case_note,
    oversight_feedback,
    oversight_finding,
    oversight_pseudonym,
    oversight_reidentification,
    oversight_run,
    oversight_watermark,
)

_CHUNK = 500


def now() -> datetime:
    return datetime.now(UTC)


# Runs ---------------------------------------------------------------------------------
def insert_run(conn: Connection, builder: str, as_of: date) -> int:
    res = conn.execute(
        oversight_run.insert().values(
            started_at=now(), builder=builder, as_of=as_of, rules="[]", findings=0,
            amount_at_risk=0,
        )
    )
    assert res.inserted_primary_key is not None
    return int(res.inserted_primary_key[0])


def finish_run(conn: Connection, run_id: int, rules: list[dict[str, Any]], findings: int,
               amount: float) -> None:
    conn.execute(
        oversight_run.update().where(oversight_run.c.id == run_id).values(
            finished_at=now(), rules=json.dumps(rules), findings=findings, amount_at_risk=amount
        )
    )


def latest_run(conn: Connection) -> dict[str, Any] | None:
    row = conn.execute(
        sa.select(oversight_run).where(oversight_run.c.finished_at.is_not(None))
        .order_by(oversight_run.c.id.desc()).limit(1)
    ).mappings().first()
    if row is None:
        return None
    out = dict(row)
    out["rules"] = json.loads(out["rules"])
    return out


# Findings -----------------------------------------------------------------------------
def upsert_findings(conn: Connection, run_id: int, rows: Sequence[dict[str, Any]]) -> int:
    """Insert new findings, refresh ones seen before (same finding_key keeps its id)."""
    fk = oversight_finding.c.finding_key
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start:start + _CHUNK]
        keys = [r["finding_key"] for r in chunk]
        existing = set(conn.execute(sa.select(fk).where(fk.in_(keys))).scalars())
        new = [{**r, "first_run_id": run_id, "last_run_id": run_id}
               for r in chunk if r["finding_key"] not in existing]
        if new:
            conn.execute(oversight_finding.insert(), new)
        old = [
            {"b_key": r["finding_key"], "b_run": run_id, "b_likelihood": r["likelihood"],
             "b_recovery": r["expected_recovery"], "b_amount": r["amount_at_risk"],
             "b_evidence": r["evidence"]}
            for r in chunk if r["finding_key"] in existing
        ]
        if old:
            conn.execute(
                oversight_finding.update().where(fk == sa.bindparam("b_key")).values(
                    last_run_id=sa.bindparam("b_run"),
                    likelihood=sa.bindparam("b_likelihood"),
                    expected_recovery=sa.bindparam("b_recovery"),
                    amount_at_risk=sa.bindparam("b_amount"),
                    evidence=sa.bindparam("b_evidence"),
                ),
                old,
            )
    return len(rows)


def _finding_dict(row: Any, *, with_evidence: bool) -> dict[str, Any]:
    out = dict(row._mapping)
    out["item_ids"] = json.loads(out["item_ids"])
    if with_evidence:
        out["evidence"] = json.loads(out["evidence"])
    else:
        out.pop("evidence", None)
    return out


def list_findings(
    conn: Connection,
    *,
    run_id: int | None,
    rule_id: str | None = None,
    provider_id: str | None = None,
    region: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Findings ranked by expected recovery (likelihood × amount at risk), best first."""
    f = oversight_finding
    cols = [c for c in f.c if c.name != "evidence"]
    q = sa.select(*cols)
    if run_id is not None:
        q = q.where(f.c.last_run_id == run_id)
    if rule_id:
        q = q.where(f.c.rule_id == rule_id)
    if provider_id:
        q = q.where(f.c.provider_id == provider_id)
    if region:
        q = q.where(f.c.region == region)
    q = q.order_by(f.c.expected_recovery.desc(), f.c.id).limit(limit).offset(offset)
    return [_finding_dict(r, with_evidence=False) for r in conn.execute(q)]


def get_finding(conn: Connection, finding_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        sa.select(oversight_finding).where(oversight_finding.c.id == finding_id)
    ).first()
    return None if row is None else _finding_dict(row, with_evidence=True)


def existing_finding_ids(conn: Connection, ids: Iterable[int]) -> set[int]:
    wanted = list(ids)
    return set(conn.execute(
        sa.select(oversight_finding.c.id).where(oversight_finding.c.id.in_(wanted))
    ).scalars())


def totals_by(conn: Connection, run_id: int | None, column: str) -> list[dict[str, Any]]:
    """Money at risk grouped by ``rule_id``, ``region`` or ``provider_id``."""
    f = oversight_finding
    col = f.c[column]
    q = sa.select(
        col.label("key"),
        sa.func.count().label("findings"),
        sa.func.sum(f.c.amount_at_risk).label("amount_at_risk"),
        sa.func.sum(f.c.expected_recovery).label("expected_recovery"),
        sa.func.count(sa.distinct(f.c.rule_id)).label("rules"),
    ).group_by(col).order_by(sa.func.sum(f.c.expected_recovery).desc())
    if run_id is not None:
        q = q.where(f.c.last_run_id == run_id)
    return [
        {**dict(r._mapping), "amount_at_risk": float(r.amount_at_risk or 0),
         "expected_recovery": float(r.expected_recovery or 0)}
        for r in conn.execute(q)
    ]


def provider_rule_matrix(conn: Connection, run_id: int | None,
                         providers: Sequence[str]) -> list[dict[str, Any]]:
    f = oversight_finding
    q = sa.select(
        f.c.provider_id, f.c.rule_id, sa.func.count().label("findings"),
        sa.func.sum(f.c.amount_at_risk).label("amount_at_risk"),
    ).where(f.c.provider_id.in_(list(providers))).group_by(f.c.provider_id, f.c.rule_id)
    if run_id is not None:
        q = q.where(f.c.last_run_id == run_id)
    return [dict(r._mapping) for r in conn.execute(q)]


# Pseudonyms and re-identification -------------------------------------------------------
def save_pseudonyms(conn: Connection, pairs: Sequence[tuple[str, str]]) -> None:
    p = oversight_pseudonym
    for start in range(0, len(pairs), _CHUNK):
        chunk = dict(pairs[start:start + _CHUNK])
        known = set(conn.execute(
            sa.select(p.c.pseudonym).where(p.c.pseudonym.in_(list(chunk)))
        ).scalars())
        rows = [{"pseudonym": k, "person_key": v} for k, v in chunk.items() if k not in known]
        if rows:
            conn.execute(p.insert(), rows)


def person_key_for(conn: Connection, pseudonym: str) -> str | None:
    p = oversight_pseudonym
    return conn.execute(
        sa.select(p.c.person_key).where(p.c.pseudonym == pseudonym)
    ).scalar_one_or_none()


def _reason_aad(finding_id: int, actor: str) -> bytes:
    return f"oversight_reidentification/{finding_id}/{actor}".encode()


def log_reidentification(conn: Connection, keys: Keyring, finding_id: int, actor: str,
                         role: str, reason: str) -> None:
    sealed = keys.seal(reason.encode(), _reason_aad(finding_id, actor))
    conn.execute(oversight_reidentification.insert().values(
        finding_id=finding_id, actor=actor, role=role, kek_id=sealed.kek_id, dek=sealed.dek,
        reason=sealed.ciphertext, at=now(),
    ))


def reidentifications(conn: Connection, keys: Keyring, finding_id: int) -> list[dict[str, Any]]:
    """The re-identification log of a finding, reasons opened (for auditors and tests)."""
    r = oversight_reidentification
    out = []
    for x in conn.execute(sa.select(r).where(r.c.finding_id == finding_id).order_by(r.c.id)):
        row = dict(x._mapping)
        aad = _reason_aad(finding_id, row["actor"])
        row["reason"] = keys.open(row.pop("kek_id"), row.pop("dek"), row["reason"], aad).decode()
        out.append(row)
    return out


# Cases --------------------------------------------------------------------------------
def insert_case(conn: Connection, title: str, actor: str, finding_ids: Sequence[int]) -> int:
    t = now()
    res = conn.execute(oversight_case.insert().values(
        title=title, status="open", opened_by=actor, opened_at=t, updated_at=t
    ))
    assert res.inserted_primary_key is not None
    case_id = int(res.inserted_primary_key[0])
    conn.execute(oversight_case_finding.insert(),
                 [{"case_id": case_id, "finding_id": f} for f in finding_ids])
    return case_id


def get_case(conn: Connection, case_id: int, *, for_update: bool = False) -> dict[str, Any] | None:
    q = sa.select(oversight_case).where(oversight_case.c.id == case_id)
    if for_update and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    return None if row is None else dict(row)


def case_finding_rows(conn: Connection, case_id: int) -> list[dict[str, Any]]:
    f = oversight_finding
    q = sa.select(*[c for c in f.c if c.name != "evidence"]).join(
        oversight_case_finding, oversight_case_finding.c.finding_id == f.c.id
    ).where(oversight_case_finding.c.case_id == case_id).order_by(f.c.id)
    return [_finding_dict(r, with_evidence=False) for r in conn.execute(q)]


def case_notes(conn: Connection, case_id: int) -> list[dict[str, Any]]:
    n = oversight_case_note
    return [dict(r._mapping) for r in conn.execute(
        sa.select(n).where(n.c.case_id == case_id).order_by(n.c.id))]


def add_note(conn: Connection, case_id: int, author: str, kind: str, text: str) -> None:
    t = now()
    conn.execute(oversight_case_note.insert().values(
        case_id=case_id, author=author, at=t, kind=kind, text=text))
    conn.execute(oversight_case.update().where(oversight_case.c.id == case_id)
                 .values(updated_at=t))


def set_case_status(conn: Connection, case_id: int, status: str,
                    recovered_amount: float | None) -> None:
    t = now()
    values: dict[str, Any] = {"status": status, "updated_at": t}
    if status in ("confirmed", "cleared"):
        values["closed_at"] = t
        values["recovered_amount"] = recovered_amount
    conn.execute(oversight_case.update().where(oversight_case.c.id == case_id).values(**values))


def list_cases(conn: Connection, status: str | None = None, limit: int = 100,
               offset: int = 0) -> list[dict[str, Any]]:
    c = oversight_case
    q = sa.select(c).order_by(c.c.id.desc()).limit(limit).offset(offset)
    if status:
        q = q.where(c.c.status == status)
    return [dict(r._mapping) for r in conn.execute(q)]


def record_feedback(conn: Connection, case_id: int, outcome: str) -> None:
    rows = [
        {"case_id": case_id, "finding_id": f["id"], "rule_id": f["rule_id"],
         "rule_version": f["rule_version"], "outcome": outcome, "at": now()}
        for f in case_finding_rows(conn, case_id)
    ]
    if rows:
        conn.execute(oversight_feedback.insert(), rows)


def rule_feedback(conn: Connection) -> dict[str, RuleFeedback]:
    fb = oversight_feedback
    q = sa.select(
        fb.c.rule_id,
        sa.func.sum(sa.case((fb.c.outcome == "confirmed", 1), else_=0)).label("confirmed"),
        sa.func.sum(sa.case((fb.c.outcome == "cleared", 1), else_=0)).label("cleared"),
    ).group_by(fb.c.rule_id)
    return {
        r.rule_id: RuleFeedback(r.rule_id, int(r.confirmed or 0), int(r.cleared or 0))
        for r in conn.execute(q)
    }


# Store-extract watermark ----------------------------------------------------------------
def get_watermark(conn: Connection, name: str) -> datetime | None:
    w = oversight_watermark
    return conn.execute(sa.select(w.c.last_updated).where(w.c.name == name)).scalar_one_or_none()


def set_watermark(conn: Connection, name: str, last_updated: datetime | None) -> None:
    w = oversight_watermark
    runs = conn.execute(sa.select(w.c.runs).where(w.c.name == name)).scalar_one_or_none()
    if runs is None:
        conn.execute(w.insert().values(name=name, last_updated=last_updated, runs=1))
    else:
        conn.execute(w.update().where(w.c.name == name).values(
            last_updated=last_updated, runs=runs + 1))
