"""What oversight does: run the catalogue, keep findings, work cases, re-identify (audited).

The demo and the CLI call :func:`run_all` and :func:`write_report`; the API calls the rest
inside its request transaction (services never commit).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection

from usmis.config import Settings
from usmis.kit.crypto import keyring_for
from usmis.kit.db import make_engine, transaction
from usmis.kit.errors import BadRequest, Forbidden, NotFound
from usmis.kit.logging import get_logger
from usmis.oversight import model, report
from usmis.oversight import repository as repo
from usmis.oversight.catalogue import load_catalogue
from usmis.oversight.engine import RuleRun, run_catalogue
from usmis.oversight.extract.writer import read_manifest

log = get_logger(__name__)

REIDENTIFY_ROLES = frozenset({"investigator"})


class Actor(Protocol):
    """Who acts: ``usmis.access.model.Principal`` satisfies this."""

    @property
    def subject(self) -> str: ...

    @property
    def role(self) -> Any: ...


def oversight_dir(settings: Settings) -> Path:
    return settings.data_dir / "oversight"


def extract_dir(settings: Settings) -> Path:
    return oversight_dir(settings) / "extract"


def key_path(settings: Settings) -> Path:
    # Deliberately not settings.resolved_key_file: the oversight key is distinct from the
    # vault's, so neither key alone links the extract to identities.
    return settings.data_dir / "oversight-pseudonym.key"


@dataclass
class RuleSummary:
    rule_id: str
    version: int
    findings: int
    amount_at_risk: float
    expected_recovery: float
    seconds: float


@dataclass
class RunSummary:
    run_id: int
    as_of: str
    builder: str
    findings: int
    amount_at_risk: float
    expected_recovery: float
    rules: list[RuleSummary] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows(run: RuleRun, feedback: dict[str, model.RuleFeedback]) -> list[dict[str, Any]]:
    fb = feedback.get(run.rule.id)
    out = []
    for f in run.findings.to_pylist():
        likelihood = float(f["likelihood"] or 0.0)
        if fb is not None:
            likelihood = fb.adjust(likelihood)
        amount = round(float(f["amount_at_risk"] or 0.0), 2)
        out.append({
            "finding_key": f["finding_key"],
            "rule_id": f["rule_id"],
            "rule_version": f["rule_version"],
            "provider_id": f["provider_id"],
            "practitioner_id": f["practitioner_id"],
            "person_pseudonym": f["person_key"],
            "region": f["region"],
            "period_start": f["period_start"],
            "period_end": f["period_end"],
            "detail": f["detail"],
            "item_ids": json.dumps(f["item_ids"] or []),
            "evidence": f["evidence"] or "[]",
            "amount_at_risk": amount,
            "likelihood": likelihood,
            "score": f["score"],
            "expected_recovery": round(amount * likelihood, 2),
        })
    return out


def run_all(
    settings: Settings,
    *,
    extract: Path | None = None,
    rules: list[str] | None = None,
    threads: int = 2,
    memory_limit: str = "3GB",
) -> RunSummary:
    """Run the catalogue over the extract and persist the findings; returns the summary."""
    root = extract or extract_dir(settings)
    manifest = read_manifest(root)
    if manifest is None:
        raise NotFound("no oversight extract: run `usmis oversight extract` first",
                       expression=["extract"])
    catalogue = load_catalogue(only=rules)
    runs = run_catalogue(root, catalogue, manifest.as_of_date, threads=threads,
                         memory_limit=memory_limit)
    engine = make_engine(settings.resolved_database_url)
    try:
        with transaction(engine) as conn:
            feedback = repo.rule_feedback(conn)
            run_id = repo.insert_run(conn, manifest.builder, manifest.as_of_date)
            summaries: list[RuleSummary] = []
            total = 0
            for run in runs:
                rows = _rows(run, feedback)
                repo.upsert_findings(conn, run_id, rows)
                summaries.append(RuleSummary(
                    rule_id=run.rule.id, version=run.rule.version, findings=len(rows),
                    amount_at_risk=round(sum(r["amount_at_risk"] for r in rows), 2),
                    expected_recovery=round(sum(r["expected_recovery"] for r in rows), 2),
                    seconds=round(run.seconds, 3),
                ))
                total += len(rows)
            amount = round(sum(s.amount_at_risk for s in summaries), 2)
            repo.finish_run(conn, run_id, [asdict(s) for s in summaries], total, amount)
    finally:
        engine.dispose()
    log.info("oversight run", run_id=run_id, findings=total)
    return RunSummary(
        run_id=run_id, as_of=manifest.as_of, builder=manifest.builder, findings=total,
        amount_at_risk=amount,
        expected_recovery=round(sum(s.expected_recovery for s in summaries), 2),
        rules=summaries,
    )


def write_report(settings: Settings, path: Path, fmt: str = "html") -> Path:
    """Write the latest run's report (``html`` with charts, or ``csv`` of ranked findings)."""
    engine = make_engine(settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            data = report.gather(conn)
    finally:
        engine.dispose()
    if fmt == "html":
        path.write_text(report.render_html(data), encoding="utf-8")
    elif fmt == "csv":
        path.write_text(report.render_csv(data), encoding="utf-8")
    else:
        raise BadRequest(f"unknown report format {fmt!r}", expression=["format"])
    return path


# Findings and providers -----------------------------------------------------------------
def current_run_id(conn: Connection) -> int | None:
    run = repo.latest_run(conn)
    return None if run is None else int(run["id"])


def findings(conn: Connection, **filters: Any) -> list[dict[str, Any]]:
    return repo.list_findings(conn, run_id=current_run_id(conn), **filters)


def finding(conn: Connection, finding_id: int) -> dict[str, Any]:
    found = repo.get_finding(conn, finding_id)
    if found is None:
        raise NotFound("finding not found", expression=["finding_id"])
    return found


def provider_summary(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """Providers ranked by expected recovery across rules, with their per-rule breakdown."""
    run_id = current_run_id(conn)
    top = repo.totals_by(conn, run_id, "provider_id")[:limit]
    matrix = repo.provider_rule_matrix(conn, run_id, [p["key"] for p in top])
    by_provider: dict[str, dict[str, Any]] = {}
    for m in matrix:
        by_provider.setdefault(m["provider_id"], {})[m["rule_id"]] = {
            "findings": m["findings"], "amount_at_risk": float(m["amount_at_risk"] or 0)}
    return [
        {"provider_id": p["key"], "findings": p["findings"], "rules": p["rules"],
         "amount_at_risk": p["amount_at_risk"], "expected_recovery": p["expected_recovery"],
         "by_rule": by_provider.get(p["key"], {})}
        for p in top
    ]


# Cases ----------------------------------------------------------------------------------
def open_case(conn: Connection, actor: Actor, finding_ids: list[int], title: str) -> int:
    if not finding_ids:
        raise BadRequest("a case needs at least one finding", expression=["finding_ids"])
    missing = set(finding_ids) - repo.existing_finding_ids(conn, finding_ids)
    if missing:
        raise NotFound("finding not found", expression=["finding_ids"])
    case_id = repo.insert_case(conn, title, actor.subject, sorted(set(finding_ids)))
    repo.add_note(conn, case_id, actor.subject, "status", "open")
    return case_id


def cases(conn: Connection, *, status: str | None = None) -> list[dict[str, Any]]:
    return repo.list_cases(conn, status=status)


def case_detail(conn: Connection, case_id: int) -> dict[str, Any]:
    case = repo.get_case(conn, case_id)
    if case is None:
        raise NotFound("case not found", expression=["case_id"])
    return {**case, "findings": repo.case_finding_rows(conn, case_id),
            "notes": repo.case_notes(conn, case_id)}


def add_case_note(conn: Connection, actor: Actor, case_id: int, text: str) -> None:
    if repo.get_case(conn, case_id) is None:
        raise NotFound("case not found", expression=["case_id"])
    if not text.strip():
        raise BadRequest("a note needs text", expression=["text"])
    repo.add_note(conn, case_id, actor.subject, "note", text)


def change_case_status(conn: Connection, actor: Actor, case_id: int, status: str,
                       *, recovered_amount: float | None = None) -> None:
    """Move a case along its life cycle; closing it records the outcome per rule."""
    case = repo.get_case(conn, case_id, for_update=True)
    if case is None:
        raise NotFound("case not found", expression=["case_id"])
    model.check_transition(case["status"], status)
    repo.set_case_status(conn, case_id, status, recovered_amount)
    repo.add_note(conn, case_id, actor.subject, "status", status)
    if status in model.CLOSED:
        repo.record_feedback(conn, case_id, status)


def rule_feedback(conn: Connection) -> list[dict[str, Any]]:
    return [
        {"rule_id": f.rule_id, "confirmed": f.confirmed, "cleared": f.cleared,
         "confirmation_rate": (f.confirmed / f.closed) if f.closed else None}
        for f in repo.rule_feedback(conn).values()
    ]


# Re-identification ------------------------------------------------------------------------
def reidentify(conn: Connection, settings: Settings, actor: Actor, finding_id: int,
               reason: str) -> str:
    """The patient index's person key behind a finding's pseudonym.

    Role-restricted (investigators only) and audited in the same transaction: if the audit
    record cannot be written, nothing is returned.
    """
    role = str(getattr(actor.role, "value", actor.role))
    if role not in REIDENTIFY_ROLES:
        raise Forbidden("only an investigator may re-identify a finding's person",
                        expression=["role"])
    if not reason.strip():
        raise BadRequest("re-identification needs a reason", expression=["reason"])
    found = finding(conn, finding_id)
    if not found["person_pseudonym"]:
        raise NotFound("this finding names no person", expression=["person_pseudonym"])
    person_key = repo.person_key_for(conn, found["person_pseudonym"])
    if person_key is None:
        raise NotFound("no person known for this pseudonym", expression=["person_pseudonym"])
    _audit_reidentification(conn, settings, actor, role, finding_id, person_key, reason)
    return person_key


def _audit_reidentification(conn: Connection, settings: Settings, actor: Actor, role: str,
                            finding_id: int, person_key: str, reason: str) -> None:
    """The one place re-identification is audited (local log + the system audit log)."""
    keys = keyring_for(settings.resolved_key_file)
    repo.log_reidentification(conn, keys, finding_id, actor.subject, role, reason)
    from usmis.oversight import audit_bridge

    audit_bridge.record_reidentification(conn, settings, actor, finding_id, person_key, reason)
    log.info("oversight re-identification", finding_id=finding_id, actor=actor.subject)
