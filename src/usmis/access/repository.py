"""All SQL of the access domain."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    DateTime,
    FromClause,
    RowMapping,
    String,
    Table,
    and_,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)

from usmis.access import tables as t
from usmis.access.model import Principal, Role
from usmis.access.policy import AUDITOR_TYPES, FINANCIAL_TYPES, IDENTITY_TYPES, Facts
from usmis.access.policy_sql import (
    ClinicianSees,
    ClinicianSeesLinked,
    ConsentAllows,
    ConsentAllowsLinked,
    fill,
    hashed_function_name,
    probe,
)
from usmis.kit.db import FastStatement, insert_rows


def insert_user(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(t.user.insert().values(**values))


def get_user(conn: Connection, username: str) -> RowMapping | None:
    row = conn.execute(select(t.user).where(t.user.c.username == username)).mappings().first()
    return row


def list_users(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(select(t.user).order_by(t.user.c.username)).mappings())


def insert_client(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(t.client.insert().values(**values))


def get_client(conn: Connection, client_id: str) -> RowMapping | None:
    return (
        conn.execute(select(t.client).where(t.client.c.client_id == client_id)).mappings().first()
    )


def utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for timezone-aware columns; treat them as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    from datetime import UTC

    return value.replace(tzinfo=UTC)


# --- projections: care links and consent rules ---------------------------------------
def replace_care_links(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    rows: list[dict[str, Any]],
    *,
    new: bool = False,
) -> None:
    """The care links projected from one resource (``new``: it has none yet)."""
    if not new:
        conn.execute(
            t.care_link.delete().where(t.care_link.c.resource_type == resource_type,
                                       t.care_link.c.resource_id == resource_id)
        )
    insert_care_links(conn, rows)


def insert_care_links(conn: Connection, rows: list[dict[str, Any]]) -> None:
    insert_rows(conn, t.care_link, rows)  # COPY on PostgreSQL: an ingest batch has dozens


def insert_consent_rules(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(t.consent_rule.insert(), rows)


def replace_consent_rules(conn: Connection, consent_id: str, rows: list[dict[str, Any]],
                          *, new: bool = False) -> None:
    if not new:
        conn.execute(t.consent_rule.delete().where(t.consent_rule.c.consent_id == consent_id))
    insert_consent_rules(conn, rows)


def consent_rules_for(conn: Connection, patient_ids: list[str]) -> list[RowMapping]:
    return list(
        conn.execute(
            select(t.consent_rule).where(t.consent_rule.c.patient_id.in_(patient_ids))
        ).mappings()
    )


# --- the patient index (one person, several source Patients) ------------------------
@cache
def _mpi_link() -> Table | None:
    """``mpi_link`` (patient_id → person_key) when the mpi domain is installed."""
    try:
        from usmis.mpi.tables import link
    except ImportError:
        return None
    return link


def linked_patient_ids(conn: Connection, patient_ids: list[str]) -> list[str]:
    if not patient_ids:
        return []
    link = _mpi_link()
    if link is None:
        return sorted(set(patient_ids))
    l1, l2 = link.alias("l1"), link.alias("l2")
    found = conn.execute(
        select(l2.c.patient_id)
        .join(l1, l1.c.person_key == l2.c.person_key)
        .where(l1.c.patient_id.in_(patient_ids))
    ).scalars()
    return sorted(set(patient_ids) | set(found))


@cache
def _person_keys_statement(dialect: str) -> FastStatement:
    """Person keys of a list of patients, the list as one parameter (an array on
    PostgreSQL, JSON on SQLite): an expanding ``IN`` costs SQLAlchemy a re-render of the
    statement on every call, and this runs on every audited request."""
    link = _mpi_link()
    assert link is not None
    ids = ("= ANY(CAST(:pids AS VARCHAR[]))" if dialect == "postgresql"
           else "IN (SELECT value FROM json_each(:pids))")
    return FastStatement(text(
        f"SELECT DISTINCT person_key FROM {link.name} WHERE patient_id {ids}"))


def person_keys(conn: Connection, patient_ids: list[str]) -> list[str]:
    if _mpi_link() is None or not patient_ids:
        return []
    dialect = conn.dialect.name
    ids = sorted(set(patient_ids))
    rows = _person_keys_statement(dialect).run(
        conn, {"pids": ids if dialect == "postgresql" else json.dumps(ids)})
    return sorted(r[0] for r in rows)


# --- emergency (break-the-glass) grants --------------------------------------------
def insert_grant(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(t.emergency_grant.insert().values(**values))


def grants(
    conn: Connection, *, unreviewed: bool = False, patient_ids: list[str] | None = None
) -> list[RowMapping]:
    q = select(t.emergency_grant).order_by(t.emergency_grant.c.granted_at.desc())
    if unreviewed:
        q = q.where(t.emergency_grant.c.reviewed_at.is_(None))
    if patient_ids is not None:
        q = q.where(t.emergency_grant.c.patient_id.in_(patient_ids))
    return list(conn.execute(q).mappings())


def get_grant(conn: Connection, grant_id: str) -> RowMapping | None:
    return (
        conn.execute(select(t.emergency_grant).where(t.emergency_grant.c.id == grant_id))
        .mappings()
        .first()
    )


def review_grant(
    conn: Connection, grant_id: str, *, reviewer: str, outcome: str, at: datetime
) -> None:
    conn.execute(
        update(t.emergency_grant)
        .where(t.emergency_grant.c.id == grant_id)
        .values(reviewed_by=reviewer, reviewed_at=at, review_outcome=outcome)
    )


# --- consent -------------------------------------------------------------------------
# --- the exfiltration guard -----------------------------------------------------------
_BLOCKED_SQL = ("SELECT 'blocked', '' WHERE EXISTS (SELECT 1 FROM access_block "
                "WHERE subject = :subject AND cleared_at IS NULL)")
_COUNT_SQL = ("SELECT 'count', (SELECT CAST(count(*) AS VARCHAR(12)) FROM access_usage "
              "WHERE subject = :subject AND hour = :hour)")
_GUARD_SQL = f"{_BLOCKED_SQL} UNION ALL {_COUNT_SQL}"
# ('blocked', '') when the subject is blocked; ('count', n): distinct patients this hour.
_GUARD = FastStatement(text(_GUARD_SQL))


def guard_state(conn: Connection, subject: str, hour: str) -> tuple[bool, int]:
    """(blocked?, distinct patients touched this hour) in one round trip."""
    blocked, count = _guard_of(_GUARD.run(conn, {"subject": subject, "hour": hour}))
    return blocked, count or 0


def _guard_of(rows: Any) -> tuple[bool, int | None]:
    """(blocked?, count this hour — None when the rows did not count)."""
    blocked, count = False, None
    for kind, value in rows:
        if kind == "blocked":
            blocked = True
        elif kind == "count":
            count = int(value)
    return blocked, count


def used_patients(conn: Connection, subject: str, hour: str, patient_ids: list[str]
                  ) -> set[str]:
    """Which of ``patient_ids`` the subject already touched this hour."""
    u = t.usage.c
    return set(conn.execute(select(u.patient_id).where(
        u.subject == subject, u.hour == hour, u.patient_id.in_(patient_ids))).scalars())


_ADD_USAGE = FastStatement(text(
    "INSERT INTO access_usage (subject, hour, patient_id) VALUES (:subject, :hour, :pid) "
    "ON CONFLICT DO NOTHING"))


def add_usage(conn: Connection, subject: str, hour: str, patient_ids: list[str]) -> None:
    for pid in patient_ids:  # usually one: the patient a request touched first this hour
        _ADD_USAGE.run(conn, {"subject": subject, "hour": hour, "pid": pid})


def is_blocked(conn: Connection, subject: str) -> bool:
    b = t.block.c
    row = conn.execute(
        select(b.subject).where(b.subject == subject, b.cleared_at.is_(None))
    ).first()
    return row is not None


def upsert_block(conn: Connection, subject: str, reason: str, at: datetime) -> bool:
    """Block ``subject``; False if it was already blocked."""
    if is_blocked(conn, subject):
        return False
    conn.execute(t.block.delete().where(t.block.c.subject == subject))
    conn.execute(t.block.insert().values(subject=subject, reason=reason, blocked_at=at))
    return True


def clear_block(conn: Connection, subject: str, by: str, at: datetime) -> bool:
    """Lift the block; the guard's count starts afresh (the auditor reviewed the burst)."""
    conn.execute(t.usage.delete().where(t.usage.c.subject == subject))
    res = conn.execute(
        update(t.block)
        .where(t.block.c.subject == subject, t.block.c.cleared_at.is_(None))
        .values(cleared_by=by, cleared_at=at)
    )
    return bool(res.rowcount)


def blocks(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(select(t.block).order_by(t.block.c.blocked_at.desc())).mappings())


def insert_alert(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(t.alert.insert().values(**values))


def alerts(conn: Connection, *, open_only: bool = False) -> list[RowMapping]:
    q = select(t.alert).order_by(t.alert.c.id.desc())
    if open_only:
        q = q.where(t.alert.c.acknowledged_at.is_(None))
    return list(conn.execute(q).mappings())


# --- the policy as SQL (mirror of policy.decide_row for searches) ---------------------
def visibility_predicate(
    principal: Principal,
    table: FromClause,
    *,
    now: datetime,
    encounter_days: int,
    own_patients: list[str],
    categories: tuple[str, ...],
) -> ColumnElement[bool] | None:
    """Rows of ``table`` (shaped like fhir_resource) the principal may see; None = all.

    Mirrors :func:`usmis.access.policy.decide_row` so searches, totals, _include,
    $everything, history and exports hide exactly what a read would refuse.
    """
    by_role = _role_predicate(
        principal, table, now=now, encounter_days=encounter_days, own_patients=own_patients,
        categories=categories,
    )
    # SMART scopes narrow searches too (also _include targets): types without r/s drop out.
    readable = {s.resource_type for s in principal.scopes if s.interactions & {"r", "s"}}
    if "*" in readable:
        return by_role
    by_scope = table.c.resource_type.in_(sorted(readable) or ["-"])
    return by_scope if by_role is None else and_(by_scope, by_role)


def _role_predicate(
    principal: Principal,
    table: FromClause,
    *,
    now: datetime,
    encounter_days: int,
    own_patients: list[str],
    categories: tuple[str, ...],
) -> ColumnElement[bool] | None:
    c = table.c
    role = principal.role
    no_patient = c.patient_id.is_(None)
    if role is Role.ADMIN:
        return None
    if role is Role.SOURCE:
        return c.source_id == principal.source_id
    if role is Role.PATIENT:
        return or_(no_patient, c.patient_id.in_(own_patients or ["-"]))
    if role is Role.REGISTRAR:
        return or_(no_patient, c.resource_type.in_(sorted(IDENTITY_TYPES)))
    if role is Role.AUDITOR:
        return or_(no_patient, c.resource_type.in_(sorted(AUDITOR_TYPES)))
    del categories  # any category present in a denial counts (the table is configurable)
    org = principal.organization_id or "-"
    linked_ok = _mpi_link() is not None
    if role is Role.INVESTIGATOR:
        consent_ok = (ConsentAllowsLinked if linked_ok else ConsentAllows)(
            c.patient_id, c.sensitivity, _text(org))
        return or_(no_patient, and_(c.resource_type.in_(sorted(FINANCIAL_TYPES)), consent_ok))
    recent = now - timedelta(days=encounter_days)
    return (ClinicianSeesLinked if linked_ok else ClinicianSees)(
        c.patient_id, c.author_org, c.sensitivity, _text(org), _text(principal.subject),
        _instant(now), _instant(recent))


def _text(value: str) -> BindParameter[str]:
    return bindparam(None, value, type_=String)


def _instant(value: datetime) -> BindParameter[datetime]:
    return bindparam(None, value, type_=DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class PatientLookup:
    """What one round trip found about a patient's person for one principal."""

    facts: Facts
    guard: tuple[bool, int | None] | None = None  # (blocked, count this hour) when asked;
    # the count is None when the patient was already touched this hour (not counted)
    used: bool = False  # the subject already touched this patient this hour


@cache
def _facts_sql(care: bool, consent: bool, guard: bool, linked: bool | None = None) -> str:
    """The per-patient lookup, built once per shape: the person keys, the consent provisions
    and emergency grants of the person (all its Patients), the care relationship, and the
    exfiltration guard's state — one statement, every part an index probe (the same probes
    as the search predicate, :mod:`usmis.access.policy_sql`)."""
    if linked is None:
        linked = _mpi_link() is not None
    slots = {"pid": ":pid", "org": ":org", "subject": ":subject", "now": ":now",
             "recent": ":recent"}
    parts: list[str] = []
    if linked:
        parts.append("SELECT 'person', person_key FROM mpi_link WHERE patient_id = :pid")
    if consent:
        parts.append("SELECT kind, value FROM access_consent_rule WHERE patient_id = :pid")
        if linked:
            parts.append("SELECT r.kind, r.value FROM mpi_link t CROSS JOIN mpi_link o "
                         "CROSS JOIN access_consent_rule r WHERE t.patient_id = :pid "
                         "AND o.person_key = t.person_key AND o.patient_id <> t.patient_id "
                         "AND r.patient_id = o.patient_id")
    if care:
        for kind in ("care", "grant"):
            parts.append(f"SELECT '{kind}', '' WHERE {fill(probe(kind, linked), **slots)}")
    if guard:
        # The hour's count matters only when this patient is new to the subject this hour
        # (it may then cross the limit): a patient already touched skips counting.
        used = ("EXISTS (SELECT 1 FROM access_usage WHERE subject = :subject AND hour = :hour "
                "AND patient_id = :pid)")
        parts += [_BLOCKED_SQL, f"SELECT 'used', '' WHERE {used}",
                  f"{_COUNT_SQL} WHERE NOT {used}"]
    if not parts:
        parts.append("SELECT 'none', ''")
    return " UNION ALL ".join(parts)


@cache
def _facts_statement(sql: str) -> FastStatement:
    stmt = text(sql)
    if ":now" in sql:
        stmt = stmt.bindparams(bindparam("now", type_=DateTime(timezone=True)),
                               bindparam("recent", type_=DateTime(timezone=True)))
    return FastStatement(stmt)


def facts_expression(dialect: str, sql: str, params: dict[str, Any]
                     ) -> tuple[str, dict[str, Any]]:
    """A :func:`facts_query` as one SQL expression over the Patient ``{pid}`` giving
    ``kind|value`` items separated by ``\x1e`` — for a statement of the FHIR store to
    select beside its rows (one statement for both) — and its parameters.  PostgreSQL
    calls the lookup's PL/pgSQL function (planned once per session); SQLite runs it as a
    correlated sub-select."""
    full = {"org": None, "subject": None, "now": None, "recent": None, "hour": None, **params}
    return _expression(sql, dialect), full


@cache
def _expression(sql: str, dialect: str) -> str:
    if dialect == "postgresql":
        args = ", ".join(["{pid}", "CAST(:org AS VARCHAR)", "CAST(:subject AS VARCHAR)",
                          "CAST(:now AS TIMESTAMPTZ)", "CAST(:recent AS TIMESTAMPTZ)",
                          "CAST(:hour AS VARCHAR)"])
        return f"array_to_string({_facts_function_name(sql)}({args}), chr(30))"
    inner = re.sub(r":pid\b", "{pid}", sql)
    return (f"(SELECT group_concat(x.kind || '|' || x.value, char(30)) FROM "
            f"(SELECT NULL AS kind, NULL AS value WHERE 0 UNION ALL {inner}) AS x)")


def _facts_function_name(sql: str) -> str:
    return hashed_function_name("facts", _function_body(sql))


def _function_body(sql: str) -> str:
    return re.sub(r":(\w+)\b", r"p_\1", sql)


def facts_function_ddl() -> list[str]:
    """CREATE statements of the lookup's functions, one per shape (idempotent); their names
    carry a hash of their body, like the search predicate's (``policy_sql``)."""
    out = []
    for care, consent, guard, linked in itertools.product((False, True), repeat=4):
        sql = _facts_sql(care, consent, guard, linked)
        out.append(
            f"CREATE OR REPLACE FUNCTION {_facts_function_name(sql)}(p_pid varchar, "
            "p_org varchar, p_subject varchar, p_now timestamptz, p_recent timestamptz, "
            "p_hour varchar) RETURNS varchar[] LANGUAGE plpgsql STABLE PARALLEL SAFE AS $fn$ "
            "BEGIN RETURN ARRAY(SELECT x.kind || '|' || x.value FROM "
            f"({_function_body(sql)}) AS x(kind, value)); END $fn$"
        )
    return out


def run_facts(conn: Connection, sql: str, params: dict[str, Any]) -> list[Any]:
    """Run a :func:`facts_query` (``params`` with ``pid``): its (kind, value) rows."""
    return _facts_statement(sql).run(conn, params)


def facts_query(
    *,
    org: str | None,
    subject: str,
    now: datetime,
    encounter_days: int,
    care: bool,
    consent: bool,
    guard_hour: str | None,
) -> tuple[str, dict[str, Any]]:
    """What the policy and the audit entry need about one patient, as SQL of (kind, value)
    rows about the Patient ``:pid`` (:func:`run_facts`; or inside the store's own statement,
    :func:`facts_expression`), and its other parameters."""
    care = bool(care and org)
    params: dict[str, Any] = {}
    if care or guard_hour is not None:
        params["subject"] = subject
    if care:
        params["now"] = now
        params["org"] = org
        params["recent"] = now - timedelta(days=encounter_days)
    if guard_hour is not None:
        params["hour"] = guard_hour
    return _facts_sql(care, consent, guard_hour is not None), params


def parse_facts(rows: Any, *, guard: bool) -> PatientLookup:
    """A :class:`PatientLookup` from the (kind, value) rows of :func:`facts_query`."""
    rows = list(rows)
    cats: set[str] = set()
    orgs: set[str] = set()
    persons: set[str] = set()
    in_care = emergency = used = False
    for kind, value in rows:
        if kind == "person":
            persons.add(value)
        elif kind == "deny-category":
            cats.add(value)
        elif kind == "deny-org":
            orgs.add(value)
        elif kind == "care":
            in_care = True
        elif kind == "grant":
            emergency = True
        elif kind == "used":
            used = True
    facts = Facts(in_care=in_care, emergency=emergency, denied_categories=frozenset(cats),
                  denied_orgs=frozenset(orgs), persons=frozenset(persons))
    return PatientLookup(facts, _guard_of(rows) if guard else None, used)


def patient_exists(conn: Connection, patient_id: str) -> bool:
    """Is there a live Patient with this id in the FHIR store (when installed)?"""
    try:
        from usmis.fhir.tables import resource as res
    except ImportError:
        return True
    row = conn.execute(
        select(res.c.id).where(
            res.c.resource_type == "Patient", res.c.id == patient_id, res.c.deleted.is_(False)
        )
    ).first()
    return row is not None


def sample_care_link(conn: Connection) -> tuple[str, str]:
    """(organization, patient) of an attachment in force — for the demo's tokens.

    Prefers a patient with an encounter at that organization too, so the clinician token
    has something to read.  Raises LookupError when nothing is attached yet.
    """
    cl = t.care_link.c
    enc = t.care_link.alias("enc")
    row = conn.execute(
        select(cl.organization_id, cl.patient_id)
        .where(cl.kind == "attachment", cl.end.is_(None))
        .order_by(
            select(func.count())
            .where(enc.c.patient_id == cl.patient_id, enc.c.kind == "encounter")
            .scalar_subquery()
            .desc(),
            cl.id,
        )
        .limit(1)
    ).first()
    if row is None:
        raise LookupError("no attachment is recorded yet")
    return str(row[0]), str(row[1])
