"""HTTP endpoints of the audit log.

    GET  /fhir/AuditEvent            auditors: the log as BALP-shaped AuditEvents (search:
                                     patient, agent, date=geYYYY-MM-DD/lt…, subtype,
                                     outcome, _count, _offset); patients: their own only
    GET  /fhir/AuditEvent/{id}
    GET  /audit/my-access            a patient: who accessed my record (JSON)
    GET  /audit/my-access.html       the same as a simple page (token typed in, kept in memory)
    GET  /audit/review-queue         auditors: unreviewed break-the-glass grants
    POST /audit/review-queue/{id}    auditors: {"outcome": "justified"|"unjustified"}

Reading the log is itself recorded in the log.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel
from sqlalchemy import Connection, Engine

from usmis.access import repository as access_repo
from usmis.access import service as access_service
from usmis.access.deps import current_principal
from usmis.access.model import Principal, Role
from usmis.audit import repository as repo
from usmis.audit import service
from usmis.audit.fhir import to_audit_event
from usmis.audit.model import AuditRecord
from usmis.config import Settings
from usmis.kit.db import unit_of_work
from usmis.kit.errors import BadRequest, Forbidden, NotFound, ServiceUnavailable

router = APIRouter()
PRINCIPAL = Depends(current_principal)
FHIR_JSON = "application/fhir+json"


def _settings(request: Request) -> Settings:
    s: Settings | None = getattr(request.app.state, "settings", None)
    return s or Settings()


def _engine(request: Request) -> Engine:
    """The engine, once this process's spooled reads are in the chain (so whoever reads
    the log sees the reads this server has answered)."""
    from usmis.access.endpoints import engine_of

    spool = getattr(request.app.state, "audit_spool", None)
    if spool is not None and not spool.drain():
        raise ServiceUnavailable("the audit log is catching up; try again shortly")
    return engine_of(request)




def _record(conn: Connection, settings: Settings, p: Principal, action: str,
            patients: list[str], entities: list[str], query: str | None = None) -> None:
    service.append(conn, settings, AuditRecord(
        action=action, subject=p.subject, role=p.role.value, organization_id=p.organization_id,
        purpose=p.purpose, resource_type="AuditEvent", entities=tuple(entities[:1000]),
        patients=tuple(patients), query=query,
    ))


def _own_patients(conn: Connection, p: Principal) -> list[str]:
    assert p.patient_id
    return access_repo.linked_patient_ids(conn, [p.patient_id])


def _fhir(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON)


def _date_bounds(values: list[str]) -> tuple[str | None, str | None]:
    since = until = None
    for v in values:
        prefix, rest = (v[:2], v[2:]) if v[:2] in ("ge", "gt", "le", "lt", "eq") else ("eq", v)
        if not rest or not rest[:4].isdigit():
            raise BadRequest("date must be an ISO date with an optional prefix",
                             expression=["date"])
        if prefix in ("ge", "gt"):
            since = rest
        elif prefix in ("le", "lt"):
            until = rest if prefix == "lt" else rest + "\uffff"
        else:
            since, until = rest, rest + "\uffff"
    return since, until


# What the audit log is searched by (the CapabilityStatement lists these).
SEARCH_PARAMS = frozenset({"patient", "agent", "subtype", "date", "emergency", "_count",
                           "_offset"})


@router.get("/fhir/AuditEvent")
def search_audit_events(request: Request, p: Principal = PRINCIPAL) -> Response:
    if p.role not in (Role.AUDITOR, Role.PATIENT):
        raise Forbidden("only auditors (and patients, about themselves) read the audit log")
    if not p.allows("AuditEvent", "s"):
        raise Forbidden("the token's scopes do not permit searching AuditEvent")
    q = request.query_params
    settings = _settings(request)
    unknown = sorted(set(q.keys()) - SEARCH_PARAMS)
    if unknown:  # ignored, it would answer an unfiltered list as if filtered
        raise BadRequest(f"AuditEvent is searched by {', '.join(sorted(SEARCH_PARAMS))} "
                         f"only, not {unknown[0]}", expression=[unknown[0]])
    try:
        count = min(int(q.get("_count", "50")), 500)
        offset = int(q.get("_offset", "0"))
    except ValueError:
        raise BadRequest("_count and _offset must be integers", expression=["_count"]) from None
    if count < 0 or offset < 0:
        raise BadRequest("_count and _offset must not be negative", expression=["_count"])
    if q.get("emergency", "true") not in ("true", "false"):
        raise BadRequest("emergency is true or false", expression=["emergency"])
    since, until = _date_bounds(q.getlist("date"))
    with unit_of_work(_engine(request), write=True) as conn:
        patients: list[str] | None = None
        if q.get("patient"):
            patients = access_repo.linked_patient_ids(
                conn, [q["patient"].removeprefix("Patient/")])
        if p.role is Role.PATIENT:
            own = _own_patients(conn, p)
            patients = [x for x in (patients or own) if x in own]
        emergency = {"true": True, "false": False}.get(q.get("emergency", ""), None)
        rows, total = repo.search_entries(
            conn, patient_ids=patients, subject=q.get("agent"), action=q.get("subtype"),
            emergency=emergency, since=since, until=until, limit=count, offset=offset,
        )
        _record(conn, settings, p, "search", patients or [],
                [f"AuditEvent/{r['seq']}" for r in rows],
                query="&".join(f"{k}=*" for k in q.keys()))
    base = settings.base_url.rstrip("/")
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": "self", "url": str(request.url)}],
        "entry": [
            {"fullUrl": f"{base}/fhir/AuditEvent/{r['seq']}", "resource": to_audit_event(r),
             "search": {"mode": "match"}}
            for r in rows
        ],
    }
    if not bundle["entry"]:  # R4 JSON has no empty arrays
        del bundle["entry"]
    if offset + count < total:
        nxt = request.url.include_query_params(_offset=offset + count, _count=count)
        bundle["link"].append({"relation": "next", "url": str(nxt)})
    return _fhir(bundle)


@router.get("/fhir/AuditEvent/{seq}")
def read_audit_event(seq: str, request: Request, p: Principal = PRINCIPAL) -> Response:
    if p.role not in (Role.AUDITOR, Role.PATIENT):
        raise Forbidden("only auditors (and patients, about themselves) read the audit log")
    if not seq.isdigit():
        raise NotFound("AuditEvent ids are sequence numbers", expression=["AuditEvent"])
    with unit_of_work(_engine(request), write=True) as conn:
        row = repo.get_entry(conn, int(seq))
        if row is None:
            raise NotFound(f"AuditEvent/{seq} is not known", expression=["AuditEvent"])
        patients = json.loads(row["patients"])
        if p.role is Role.PATIENT and not set(patients) & set(_own_patients(conn, p)):
            raise NotFound(f"AuditEvent/{seq} is not known", expression=["AuditEvent"])
        _record(conn, _settings(request), p, "read", patients, [f"AuditEvent/{seq}"])
    return _fhir(to_audit_event(row))


@router.get("/audit/my-access")
def my_access(request: Request, p: Principal = PRINCIPAL) -> dict[str, Any]:
    """Who accessed my record: who, which organization, when, why, emergency or not."""
    if p.role is not Role.PATIENT:
        raise Forbidden("this is the patient's view of their own record")
    with unit_of_work(_engine(request), write=True) as conn:
        own = _own_patients(conn, p)
        rows = repo.entries_for_patients(conn, own, limit=500)
        grants = access_repo.grants(conn, patient_ids=own)
        _record(conn, _settings(request), p, "search", own, [], query="my-access")
    items = [
        {
            "when": r["recorded"],
            "who": r["subject"],
            "role": r["role"],
            "organization": r["organization_id"],
            "action": r["action"],
            "resource_type": r["resource_type"],
            "why": r["purpose"],
            "emergency": bool(r["emergency"]),
            "allowed": r["outcome"] == "0",
        }
        for r in rows
        if r["subject"] != p.subject
    ]
    emergencies = [
        {
            "when": g["granted_at"].isoformat() if g["granted_at"] else None,
            "who": g["subject"],
            "organization": g["organization_id"],
            "reason": access_service.grant_reason(_settings(request), g),
            "until": g["expires_at"].isoformat() if g["expires_at"] else None,
            "reviewed": g["review_outcome"],
        }
        for g in grants
    ]
    return {"accesses": items, "emergencies": emergencies}


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Who accessed my record</title>
<style>body{font:15px system-ui;margin:2em;max-width:60em}table{border-collapse:collapse}
td,th{border-bottom:1px solid #ccc;padding:.3em .6em;text-align:left}.em{color:#b00;
font-weight:bold}</style></head><body>
<h1>Who accessed my record</h1>
<p>Paste your access token (it stays in this page's memory only).</p>
<input id="t" size="60" placeholder="access token"> <button id="go">Show</button>
<h2>Emergency access</h2><table id="e"></table>
<h2>All accesses</h2><table id="a"></table>
<script>
const cell = (tr, v, cls) => { const td = document.createElement('td');
  td.textContent = v == null ? '' : String(v); if (cls) td.className = cls; tr.appendChild(td); };
const head = (tb, cols) => { tb.innerHTML = ''; const tr = tb.insertRow();
  cols.forEach(c => { const th = document.createElement('th'); th.textContent = c;
  tr.appendChild(th); }); };
document.getElementById('go').onclick = async () => {
  const r = await fetch('my-access', {headers: {Authorization: 'Bearer ' +
    document.getElementById('t').value.trim()}});
  const d = await r.json(); if (!r.ok) { alert(d.issue ? d.issue[0].diagnostics : r.status);
  return; }
  const e = document.getElementById('e');
  head(e, ['when', 'who', 'organization', 'reason', 'until', 'review']);
  d.emergencies.forEach(g => { const tr = e.insertRow(); [g.when, g.who, g.organization,
    g.reason, g.until, g.reviewed || 'pending'].forEach(v => cell(tr, v)); });
  const a = document.getElementById('a');
  head(a, ['when', 'who', 'role', 'organization', 'what', 'why', 'emergency', 'allowed']);
  d.accesses.forEach(x => { const tr = a.insertRow(); [x.when, x.who, x.role,
    x.organization, x.action + ' ' + (x.resource_type || ''), x.why].forEach(v => cell(tr, v));
    cell(tr, x.emergency ? 'EMERGENCY' : '', x.emergency ? 'em' : '');
    cell(tr, x.allowed ? 'yes' : 'denied'); });
};
</script></body></html>
"""


@router.get("/audit/my-access.html", response_class=HTMLResponse)
def my_access_page() -> HTMLResponse:
    return HTMLResponse(_PAGE)


@router.get("/audit/review-queue")
def review_queue(request: Request, p: Principal = PRINCIPAL) -> dict[str, Any]:
    if p.role is not Role.AUDITOR:
        raise Forbidden("only auditors review emergency access")
    with unit_of_work(_engine(request), write=True) as conn:
        rows = access_repo.grants(conn, unreviewed=True)
        alerts = access_repo.alerts(conn, open_only=True)
        blocks = [b for b in access_repo.blocks(conn) if b["cleared_at"] is None]
        _record(conn, _settings(request), p, "search", [], [], query="review-queue")
    return {
        "emergency_grants": [
            {"id": g["id"], "who": g["subject"], "organization": g["organization_id"],
             "patient": g["patient_id"],
             "reason": access_service.grant_reason(_settings(request), g),
             "granted_at": g["granted_at"].isoformat(), "expires_at": g["expires_at"].isoformat()}
            for g in rows
        ],
        "alerts": [
            {"id": a["id"], "kind": a["kind"], "who": a["subject"],
             "organization": a["organization_id"], "detail": a["detail"],
             "at": a["created_at"].isoformat()}
            for a in alerts
        ],
        "blocked": [
            {"who": b["subject"], "reason": b["reason"], "since": b["blocked_at"].isoformat()}
            for b in blocks
        ],
    }


class ReviewIn(BaseModel):
    outcome: str


@router.post("/audit/review-queue/{grant_id}")
def review(grant_id: str, body: ReviewIn, request: Request, p: Principal = PRINCIPAL
           ) -> dict[str, str]:
    with unit_of_work(_engine(request), write=True) as conn:
        access_service.review_emergency(conn, _settings(request), p, grant_id, body.outcome)
    return {"grant": grant_id, "outcome": body.outcome}
