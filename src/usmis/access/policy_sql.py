"""The search side of the policy as SQL: what a clinician (or an investigator) may see.

Mirror of :func:`usmis.access.policy.decide_row`, embedded in every search, ``_include``,
``$everything``, history and export statement (``repository.visibility_predicate``).

Why fixed SQL templates rather than a Core expression tree:

- SQLAlchemy walks a statement's whole tree for its cache key on every execution; the rule
  as Core was ~150 nodes (~0.25 ms per search).  As a function-like element its cache key
  is the class and its few arguments (the row's columns and the bound values), which keeps
  the statement cache and the parameter extraction exactly right.
- Every lookup is correlated to the candidate row and is an index probe (care_link by
  organization + patient, grants by subject + patient, consent rules by patient, mpi_link
  by patient and by person), so a search costs what it examines, never the size of an
  organization's list of patients.

The per-patient lookup of reads (``repository.facts_query``) uses the same probes.

Two spellings of the same rule, tested alike through the API on both backends:

- SQLite (statements are compiled once per connection and cached): short-circuiting probes
  — the care probe first, the person's other Patients only when the row's own fail.
- PostgreSQL (the search statement is planned on every request, and every sub-select costs
  planning): two sub-selects, reach and denial, over the row's "people" (its Patient and
  the other Patients of its person) — inside a PL/pgSQL function, so that the search's
  planner sees one call instead of a dozen sub-selects (planning them cost ~1 ms a search,
  a third of it), while the function's own statement is planned once per session.  The
  function's name carries a hash of its body, so a search can never run an outdated rule:
  a changed template needs a migration that creates the new function
  (:func:`pg_function_ddl`; first created by ``access_0002``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sqlalchemy import Boolean
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

_SLOT = re.compile(r"\{(\w+)\}")


def _valid(a: str) -> str:
    """Care link ``a`` confers care now: an attachment in force, an encounter since
    {recent}, an open referral."""
    return (
        f"(({a}.kind = 'attachment' AND ({a}.start IS NULL OR {a}.start <= {{now}}) "
        f'AND ({a}."end" IS NULL OR {a}."end" >= {{now}})) '
        f'OR ({a}.kind = \'encounter\' AND COALESCE({a}."end", {a}.start) >= {{recent}}) '
        f'OR ({a}.kind = \'referral\' AND ({a}."end" IS NULL OR {a}."end" >= {{now}})))'
    )


def _denies(a: str) -> str:
    """Consent rule ``a`` hides a row of category {sens} from organization {org}."""
    return (f"(({a}.kind = 'deny-category' AND {a}.value = {{sens}}) "
            f"OR ({a}.kind = 'deny-org' AND {a}.value = {{org}}))")


# --- short-circuiting probes (SQLite; the per-patient lookup on both) --------------------
def _care(pid: str, a: str) -> str:
    return (f"EXISTS (SELECT 1 FROM access_care_link {a} WHERE {a}.organization_id = {{org}} "
            f"AND {a}.patient_id = {pid} AND {_valid(a)})")


def _grant(pid: str, a: str) -> str:
    return (f"EXISTS (SELECT 1 FROM access_emergency_grant {a} WHERE {a}.subject = {{subject}} "
            f"AND {a}.patient_id = {pid} AND {a}.expires_at > {{now}})")


def _consent(pid: str, a: str) -> str:
    return (f"EXISTS (SELECT 1 FROM access_consent_rule {a} WHERE {a}.patient_id = {pid} "
            f"AND {_denies(a)})")


_PROBES = {"care": _care, "grant": _grant, "denied": _consent}


def probe(kind: str, linked: bool) -> str:
    """An EXISTS for the Patient {pid} or, ``linked``, another Patient of its person (the
    own Patient first): "care" of {org}, an emergency "grant" of {subject}, or a consent
    that "denied" the row ({sens}) to {org}."""
    one = _PROBES[kind]
    direct = one("{pid}", f"acc_{kind}")
    if not linked:
        return direct
    a = f"acc_{kind}_l"
    return (f"({direct} OR EXISTS (SELECT 1 FROM mpi_link {a}t JOIN mpi_link {a}o "
            f"ON {a}o.person_key = {a}t.person_key WHERE {a}t.patient_id = {{pid}} "
            f"AND {a}o.patient_id <> {a}t.patient_id AND {one(f'{a}o.patient_id', a)}))")


def fill(template: str, **sql: str) -> str:
    """The template with its {slots} replaced by SQL (e.g. bind parameters ``:pid``)."""
    return _SLOT.sub(lambda m: sql[m.group(1)], template)


def _probe_reach(linked: bool) -> str:
    return f"({probe('care', linked)} OR {probe('grant', linked)})"


# --- PostgreSQL: few sub-selects ---------------------------------------------------------
def _people(a: str, linked: bool) -> str:
    """The row's Patient and (with the patient index) the other Patients of its person."""
    if not linked:
        return f"(SELECT {{pid}} AS id) {a}"
    return (f"(SELECT {{pid}} AS id UNION ALL SELECT {a}_o.patient_id FROM mpi_link {a}_t "
            f"JOIN mpi_link {a}_o ON {a}_o.person_key = {a}_t.person_key "
            f"WHERE {a}_t.patient_id = {{pid}} AND {a}_o.patient_id <> {a}_t.patient_id) {a}")


def _set_reach(linked: bool) -> str:
    # EXISTS stops at the first row: the grant branch runs only without care.
    return (f"EXISTS (SELECT 1 FROM {_people('acc_p', linked)} "
            "JOIN access_care_link acc_c ON acc_c.patient_id = acc_p.id "
            f"WHERE acc_c.organization_id = {{org}} AND {_valid('acc_c')} "
            f"UNION ALL SELECT 1 FROM {_people('acc_q', linked)} "
            "JOIN access_emergency_grant acc_g ON acc_g.patient_id = acc_q.id "
            "WHERE acc_g.subject = {subject} AND acc_g.expires_at > {now})")


def _set_denied(linked: bool) -> str:
    return (f"EXISTS (SELECT 1 FROM {_people('acc_s', linked)} "
            "JOIN access_consent_rule acc_r ON acc_r.patient_id = acc_s.id "
            f"WHERE {_denies('acc_r')})")


def _sees(reach: str, denied: str) -> str:
    """Not patient data; or authored by the organization; or (care or emergency) and no
    consent denial."""
    return f"({{pid}} IS NULL OR {{author}} = {{org}} OR ({reach} AND NOT {denied}))"


class PolicySql(FunctionElement[bool]):
    """A fixed SQL template (per dialect) over its arguments, named by ``slots``."""

    inherit_cache = True
    type = Boolean()
    slots: tuple[str, ...] = ()
    sqlite = ""
    postgresql = ""


class ConsentAllows(PolicySql):
    """No consent of the row's person denies it to {org} (investigators)."""

    inherit_cache = True
    slots = ("pid", "sens", "org")
    sqlite = f"NOT {probe('denied', False)}"
    postgresql = f"NOT {_set_denied(False)}"


class ConsentAllowsLinked(ConsentAllows):
    inherit_cache = True
    sqlite = f"NOT {probe('denied', True)}"
    postgresql = f"NOT {_set_denied(True)}"


class ClinicianSees(PolicySql):
    """The clinician's rule (policy.decide_row) for one candidate row."""

    inherit_cache = True
    slots = ("pid", "author", "sens", "org", "subject", "now", "recent")
    sqlite = _sees(_probe_reach(False), probe("denied", False))
    postgresql = _sees(_set_reach(False), _set_denied(False))


class ClinicianSeesLinked(ClinicianSees):
    inherit_cache = True
    sqlite = _sees(_probe_reach(True), probe("denied", True))
    postgresql = _sees(_set_reach(True), _set_denied(True))


def _render(element: PolicySql, compiler: Any, **kw: Any) -> str:
    if compiler.dialect.name == "postgresql":
        call = ", ".join(compiler.process(c, **kw) for c in element.clauses)
        return f"{pg_function_name(type(element))}({call})"
    template = element.sqlite
    args = dict(zip(element.slots, element.clauses, strict=True))
    # Each occurrence rendered in text order (positional parameter styles need that order).
    parts = _SLOT.split(template)
    for i in range(1, len(parts), 2):
        parts[i] = compiler.process(args[parts[i]], **kw)
    return "".join(parts)


for _cls in (ConsentAllows, ConsentAllowsLinked, ClinicianSees, ClinicianSeesLinked):
    compiles(_cls)(_render)


# --- PostgreSQL functions ------------------------------------------------------------------
_PG_TYPES = {"now": "timestamptz", "recent": "timestamptz"}  # the other slots are varchar
_POLICIES = (ConsentAllows, ConsentAllowsLinked, ClinicianSees, ClinicianSeesLinked)


def _pg_body(cls: type[PolicySql]) -> str:
    return fill(cls.postgresql, **{slot: f"p_{slot}" for slot in cls.slots})


def hashed_function_name(stem: str, body: str) -> str:
    """``usmis_<stem>_<hash of body>``: a changed body is a new function, never a stale one."""
    return f"usmis_{stem}_{hashlib.sha256(body.encode()).hexdigest()[:8]}"


def pg_function_name(cls: type[PolicySql]) -> str:
    return hashed_function_name(re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower(),
                                _pg_body(cls))


def pg_function_ddl() -> list[str]:
    """CREATE statements of the functions the current rule renders to (idempotent)."""
    out = []
    for cls in _POLICIES:
        params = ", ".join(f"p_{slot} {_PG_TYPES.get(slot, 'varchar')}" for slot in cls.slots)
        out.append(
            f"CREATE OR REPLACE FUNCTION {pg_function_name(cls)}({params}) RETURNS boolean "
            f"LANGUAGE plpgsql STABLE PARALLEL SAFE AS $fn$ BEGIN RETURN {_pg_body(cls)}; "
            "END $fn$"
        )
    return out
