"""The policy decision point of one request: ``RequestAccess``.

It implements STORE's seam (``usmis.fhir.context.AccessContext``): ``authorize`` decides
with :mod:`usmis.access.policy` from facts looked up here (cached per patient for the
request), ``row_filter`` hands search the same policy as SQL, ``record`` applies the
exfiltration guard and appends the audit entry: a write's on the work's own connection
(same transaction), a read's to the read spool (:mod:`usmis.audit.spool`).

What must survive the request's rollback — the audit entries of *denials*, the guard's
usage counts, a block and the auditor's alert — is kept pending and written by
:meth:`RequestAccess.flush` in a transaction of its own after the work has ended (the
``access_context`` dependency calls it).  Writing them on a second connection while the
work's transaction is open would deadlock on SQLite's single writer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, Engine, FromClause, false

from usmis.access import repository as repo
from usmis.access.model import Principal, Role
from usmis.access.policy import (
    GUARDED_ROLES,
    READ_ACTIONS,
    WRITE_ACTIONS,
    Decision,
    Facts,
    RowLike,
    decide_row,
    decide_type,
)
from usmis.access.sensitivity import categories as sensitivity_categories
from usmis.audit import service as audit
from usmis.audit.model import MINOR_FAILURE, AuditRecord, redact_query
from usmis.config import Settings
from usmis.kit.db import at_commit
from usmis.kit.errors import Forbidden, NotFound
from usmis.kit.logging import get_logger

if TYPE_CHECKING:
    from usmis.audit.spool import AuditSpool

log = get_logger(__name__)


def hour_key(now: datetime) -> str:
    return now.isoformat()[:13]  # YYYY-MM-DDTHH (UTC)


@dataclass
class _State:
    blocked: bool = False
    counted: int | None = 0  # distinct patients touched this hour (guarded roles); None:
    # not known yet (the lookups so far were of patients already touched this hour)
    used: set[str] = field(default_factory=set)  # of those, the ones this request knows
    own_patients: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _Row:
    patient_id: str | None
    source_id: str | None
    author_org: str | None
    sensitivity: str | None


class RequestAccess:
    """Access context for one request of one principal (not shared between requests)."""

    def __init__(
        self,
        principal: Principal,
        settings: Settings,
        engine: Engine,
        *,
        now: datetime | None = None,
        spool: AuditSpool | None = None,
    ) -> None:
        self.principal = principal
        self.spool = spool
        self.settings = settings
        self.engine = engine
        self.now = now or datetime.now(UTC)
        self.hour = hour_key(self.now)
        self._conn: Connection | None = None
        self._own: Connection | None = None
        self._state: _State | None = None
        self._facts: dict[str, repo.PatientLookup] = {}
        self._emergency: set[str] = set()  # patients reached only through a grant
        self._pending_audit: list[AuditRecord] = []
        self._pending_usage: set[str] = set()
        self._pending_block: str | None = None

    # ------------------------------------------------------------------ STORE's seam
    @property
    def source_id(self) -> str | None:
        return self.principal.source_id if self.principal.role is Role.SOURCE else None

    @property
    def author_org(self) -> str | None:
        return self.principal.organization_id

    def bind(self, conn: Connection) -> None:
        """Use the work's connection for lookups (saves a connection, sees its writes)."""
        self._conn = conn

    def authorize(self, action: str, resource_type: str, row: RowLike | None = None) -> None:
        if not self.settings.policy_enabled:
            return
        if row is None:
            decision = decide_type(self.principal, action, resource_type)
            if decision.allowed and action in READ_ACTIONS:
                # The guard's block is checked in ``record``, before anything is answered:
                # by then the rows' facts have usually brought it (no round trip of its own).
                return
        else:
            # The row's facts first: for a guarded role their lookup also brings the
            # guard's state, so a read needs one round trip for both.
            facts = self._facts_for(row)
        state = self._load_state()
        if state.blocked:
            self._deny(action, resource_type, row, _BLOCKED)
        if row is not None:
            decision = decide_row(self.principal, action, resource_type, row, facts)
            if row.patient_id and action in READ_ACTIONS:
                self._touch([row.patient_id], action, resource_type)
            if decision.emergency and row.patient_id:
                self._emergency.add(row.patient_id)
        if not decision.allowed:
            self._deny(action, resource_type, row, decision)

    def row_filter(self, table: FromClause) -> ColumnElement[bool] | None:
        if not self.settings.policy_enabled:
            return None
        own: tuple[str, ...] = ()
        if self.principal.role is Role.PATIENT:
            own = tuple(sorted(self._load_state().own_patients))
        elif self._state is not None and self._state.blocked:
            return false()  # (not looked up for this: ``record`` denies before answering)
        # Built once per principal, table and minute: building this tree costs more than
        # running it.  (So a grant may outlive its expiry by < 1 minute in searches.)
        minute = self.now.replace(second=0, microsecond=0)
        return _predicate(self.principal, table, minute, self.settings.care_encounter_days, own)

    def record(
        self,
        conn: Connection,
        action: str,
        resource_type: str | None,
        rows: list[Any],
        *,
        outcome: str = "0",
        query: str | None = None,
    ) -> None:
        patients = sorted({r.patient_id for r in rows if getattr(r, "patient_id", None)})
        if self.settings.policy_enabled:
            if action in WRITE_ACTIONS:
                # Row-level checks of what was written (its patient, its author) happen here,
                # before commit: raising aborts the write.
                for r in rows:
                    written = _Row(r.patient_id, r.source_id, r.author_org, r.sensitivity)
                    d = decide_row(self.principal, action, resource_type or r.resource_type,
                                   written, self._facts_for(written))
                    if not d.allowed:
                        self._deny(action, resource_type, written, d)
                    if d.emergency and r.patient_id:
                        self._emergency.add(r.patient_id)
            elif action in READ_ACTIONS:
                if self.principal.role in GUARDED_ROLES and self._load_state().blocked:
                    self._deny(action, resource_type, None, _BLOCKED)
                if (
                    action.startswith("search")
                    and len(rows) > self.settings.exfil_max_results
                    and self.principal.role in GUARDED_ROLES
                ):
                    self._trip("result-size", f"{len(rows)} results in one response", action,
                               resource_type)
                self._touch(patients, action, resource_type)
            if self._pending_usage:
                repo.add_usage(conn, self.principal.subject, self.hour,
                               sorted(self._pending_usage))
                self._pending_usage.clear()
        if not self.settings.audit_enabled:
            return
        emergency = any(p in self._emergency for p in patients)
        entities = tuple(f"{r.resource_type}/{r.id}" for r in rows[:1000])
        detail: dict[str, Any] = {}
        if len(rows) > len(entities):
            detail["entities_total"] = len(rows)
        if self.principal.token_id:
            detail["jti"] = self.principal.token_id
        entry = AuditRecord(
            action=action,
            outcome=outcome,
            subject=self.principal.subject,
            role=self.principal.role.value,
            organization_id=self.principal.organization_id,
            source_id=self.principal.source_id,
            purpose="ETREAT" if emergency else self.principal.purpose,
            emergency=emergency,
            resource_type=resource_type,
            entities=entities,
            patients=tuple(patients),
            persons=self._persons(conn, patients),
            query=redact_query(query),
            detail=json.dumps(detail, sort_keys=True) if detail else None,
        )
        if self.spool is not None and action in READ_ACTIONS:
            self.spool.submit(entry)  # journaled now, chained in the background
        else:
            # Last in the transaction: the chain's head, once taken, makes every other
            # writer wait until this one commits (4 clients loading Bundles: 4,351
            # resources/s with the entry appended where the work began, 5,378–6,040 last).
            at_commit(conn, lambda: audit.append(conn, self.settings, entry))

    def _persons(self, conn: Connection, patients: list[str]) -> tuple[str, ...]:
        """Person keys of the patients: from the facts already looked up, else one query."""
        known: set[str] = set()
        missing: list[str] = []
        for p in patients:
            found = self._facts.get(p)
            if found is not None:
                known |= found.facts.persons
            else:
                missing.append(p)
        if missing:
            known.update(repo.person_keys(conn, missing))
        return tuple(sorted(known))

    # ------------------------------------------------------------------ after the work
    def has_pending(self) -> bool:
        """Whether :meth:`flush` has anything to write."""
        return bool(self._pending_audit or self._pending_usage or self._pending_block)

    def needs_flush(self) -> bool:
        """Whether :meth:`flush` has anything to do (write, or close a connection)."""
        return self.has_pending() or self._own is not None

    def flush(self) -> None:
        """Write what must outlive the request's transaction (denials, guard state)."""
        try:
            if not self.has_pending():
                return
            from usmis.kit.db import transaction

            with transaction(self.engine) as conn:
                subject = self.principal.subject
                if self._pending_usage:
                    repo.add_usage(conn, subject, self.hour, sorted(self._pending_usage))
                if self._pending_block:
                    if repo.upsert_block(conn, subject, self._pending_block, self.now):
                        repo.insert_alert(conn, {
                            "kind": "exfiltration-guard",
                            "subject": subject,
                            "organization_id": self.principal.organization_id,
                            "detail": self._pending_block,
                            "created_at": self.now,
                        })
                        log.warning("principal blocked by the exfiltration guard",
                                    subject=subject, reason=self._pending_block)
                if self.settings.audit_enabled:
                    for rec in self._pending_audit:
                        audit.append(conn, self.settings, rec)
            self._pending_audit.clear()
            self._pending_usage.clear()
            self._pending_block = None
        finally:
            if self._own is not None:
                self._own.close()
                self._own = None

    # ------------------------------------------------------------------ internals
    def _lookup(self) -> Connection:
        if self._conn is not None:
            return self._conn
        if self._own is None:
            self._own = self.engine.connect()
        return self._own

    def _load_state(self) -> _State:
        if self._state is not None:
            return self._state
        conn = self._lookup()
        p = self.principal
        state = _State()
        if p.role in GUARDED_ROLES:
            # Only guarded roles are ever blocked; one round trip for block + usage count.
            state.blocked, state.counted = repo.guard_state(conn, p.subject, self.hour)
        if p.role is Role.PATIENT and p.patient_id:
            state.own_patients = frozenset(repo.linked_patient_ids(conn, [p.patient_id]))
        self._end_lookup()
        self._state = state
        return state

    def _end_lookup(self) -> None:
        if self._own is not None and self._conn is None:
            # End the lookup connection's read transaction so it holds no snapshot.
            self._own.rollback()

    def _facts_for(self, row: RowLike) -> Facts:
        p = self.principal
        if p.role is Role.PATIENT:
            return Facts(own_patients=self._load_state().own_patients)
        if row.patient_id is None:
            return _NO_FACTS
        found = self._patient(row.patient_id)
        return _NO_FACTS if found is None else found.facts

    def _patient(self, patient_id: str) -> repo.PatientLookup | None:
        """The facts about a patient this principal's decisions and audit need (one round
        trip per patient per request; cached).  None for roles that need none here."""
        cached = self._facts.get(patient_id)
        if cached is not None:
            return cached
        query = self._facts_query()
        if query is None:  # patient, admin, source: no facts needed here
            return None
        sql, params = query
        found = repo.parse_facts(
            repo.run_facts(self._lookup(), sql, {**params, "pid": patient_id}),
            guard=True,
        )
        self._end_lookup()
        self._adopt(patient_id, found)
        return found

    def _facts_query(self, dialect: str | None = None) -> tuple[str, dict[str, Any]] | None:
        """The patient lookup's SQL over ``:pid`` — or, given the ``dialect``, as an
        expression over ``{pid}`` for the store's statement — and its parameters."""
        p = self.principal
        if p.role not in GUARDED_ROLES:
            return None
        query = repo.facts_query(
            org=p.organization_id,
            subject=p.subject,
            now=self.now,
            encounter_days=self.settings.care_encounter_days,
            care=p.role is Role.CLINICIAN,
            consent=p.role in (Role.CLINICIAN, Role.INVESTIGATOR),
            guard_hour=self.hour,  # the guard's block, count and this patient ride along
        )
        return query if dialect is None else repo.facts_expression(dialect, *query)

    def _adopt(self, patient_id: str | None, found: repo.PatientLookup) -> None:
        if patient_id is not None:
            self._facts[patient_id] = found
        if found.guard is not None:
            blocked, counted = found.guard
            if self._state is None:
                self._state = _State(blocked=blocked, counted=counted)
            else:
                self._state.blocked |= blocked
                if self._state.counted is None:
                    self._state.counted = counted
            if found.used and patient_id is not None:
                self._state.used.add(patient_id)

    # STORE's optional seam: the facts ride along with the store's own statement.
    def read_lookup(self, dialect: str) -> tuple[str, dict[str, Any]] | None:
        """An SQL expression over the Patient ``{pid}`` giving what deciding on the rows
        will need, with its parameters; None when nothing is needed."""
        if not self.settings.policy_enabled:
            return None
        return self._facts_query(dialect)

    def adopt_lookup(self, patient_id: str | None, rows: list[tuple[str, str]]) -> None:
        """What that expression gave for ``patient_id``."""
        self._adopt(patient_id, repo.parse_facts(rows, guard=True))

    def _touch(self, patients: list[str], action: str, resource_type: str | None) -> None:
        """Count distinct patients read this hour; past the limit, block and alert."""
        if self.principal.role not in GUARDED_ROLES or not patients:
            return
        state = self._load_state()
        unknown = [p for p in patients if p not in state.used and p not in self._facts]
        if unknown:
            # Rows that were not decided one by one (history, $everything, export).
            state.used |= repo.used_patients(self._lookup(), self.principal.subject,
                                             self.hour, unknown)
            self._end_lookup()
        new = [p for p in patients if p not in state.used]
        if not new:
            return
        if state.counted is None:  # only patients already touched were looked up so far
            state.counted = repo.guard_state(self._lookup(), self.principal.subject,
                                             self.hour)[1]
            self._end_lookup()
        state.used.update(new)
        state.counted += len(new)
        self._pending_usage.update(new)
        limit = self.settings.exfil_patients_per_hour
        if state.counted > limit:
            self._trip("distinct-patients",
                       f"more than {limit} distinct patients within one hour", action,
                       resource_type)

    def _trip(self, code: str, why: str, action: str, resource_type: str | None) -> None:
        state = self._load_state()
        state.blocked = True
        self._pending_block = f"{code}: {why}"
        self._pending_audit.append(self._denial_record(
            action, resource_type, None,
            Decision(False, code, why)))
        raise Forbidden(f"access blocked by the exfiltration guard ({why}); "
                        "the auditor has been alerted")

    def _denial_record(self, action: str, resource_type: str | None, row: RowLike | None,
                       decision: Decision) -> AuditRecord:
        p = self.principal
        return AuditRecord(
            action=action,
            outcome=MINOR_FAILURE,
            subject=p.subject,
            role=p.role.value,
            organization_id=p.organization_id,
            source_id=p.source_id,
            purpose=p.purpose,
            resource_type=resource_type,
            entities=(f"{resource_type}/{row_id}",) if (row_id := getattr(row, "id", None))
            else (),
            patients=(row.patient_id,) if row is not None and row.patient_id else (),
            detail=json.dumps({"denied": decision.reason}),
        )

    def _deny(self, action: str, resource_type: str | None, row: RowLike | None,
              decision: Decision) -> None:
        self._pending_audit.append(self._denial_record(action, resource_type, row, decision))
        if decision.reason.startswith("consent") and action in READ_ACTIONS:
            # Consent makes data invisible: answer as if it did not exist, so neither its
            # existence nor its category leaks (a 403 "denies HIV" would say both).
            rid = getattr(row, "id", None)
            raise NotFound(f"{resource_type}/{rid} is not known" if rid else "not found",
                           expression=[resource_type] if resource_type else None)
        raise Forbidden(decision.message or "access denied by policy")


_NO_FACTS = Facts()
_BLOCKED = Decision(False, "blocked",
                    "this account is blocked by the exfiltration guard; an auditor must review it")


@lru_cache(maxsize=4096)
def _predicate(
    principal: Principal,
    table: FromClause,
    minute: datetime,
    encounter_days: int,
    own_patients: tuple[str, ...],
) -> ColumnElement[bool] | None:
    return repo.visibility_predicate(
        principal,
        table,
        now=minute,
        encounter_days=encounter_days,
        own_patients=list(own_patients),
        categories=sensitivity_categories(),
    )
