"""HTTP endpoints of the oversight domain (``/oversight/...``): findings, providers, cases.

Investigators work findings and cases; auditors and administrators may read them.  Only an
investigator re-identifies a finding's person, with a reason, and that is audited.  Each
request is one transaction: a case change and its notes/feedback commit together.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine

from usmis.access.deps import current_principal
from usmis.access.model import Principal
from usmis.config import Settings
from usmis.kit.errors import Forbidden
from usmis.oversight import service
from usmis.oversight.catalogue import load_catalogue

router = APIRouter(prefix="/oversight", tags=["oversight"])

READERS = frozenset({"investigator", "auditor", "admin"})
WORKERS = frozenset({"investigator"})
PRINCIPAL = Depends(current_principal)


def _role(p: Principal) -> str:
    return str(getattr(p.role, "value", p.role))


def reader(principal: Principal = PRINCIPAL) -> Principal:
    if _role(principal) not in READERS:
        raise Forbidden("oversight findings are for investigators and auditors",
                        expression=["role"])
    return principal


def worker(principal: Principal = PRINCIPAL) -> Principal:
    if _role(principal) not in WORKERS:
        raise Forbidden("only investigators work oversight cases", expression=["role"])
    return principal


def _conn(request: Request) -> Iterator[Connection]:
    engine: Engine = request.app.state.engine
    with engine.begin() as conn:
        yield conn


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


READER = Depends(reader)
WORKER = Depends(worker)
CONN = Depends(_conn)
SETTINGS = Depends(_settings)


class CaseIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    finding_ids: list[int] = Field(min_length=1)


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class StatusIn(BaseModel):
    status: str = Field(pattern="^(investigating|confirmed|cleared)$")
    recovered_amount: float | None = Field(default=None, ge=0)


class ReidentifyIn(BaseModel):
    reason: str = Field(min_length=3, max_length=1000)


@router.get("/rules")
def rules(_: Principal = READER,
          conn: Connection = CONN) -> list[dict[str, Any]]:
    feedback = {f["rule_id"]: f for f in service.rule_feedback(conn)}
    return [
        {"id": r.id, "version": r.version, "title": r.title, "catches": r.catches,
         "basis": r.basis, "data": list(r.data), "severity": r.severity,
         "amount_method": r.amount_method, "evidence_columns": list(r.evidence_columns),
         "feedback": feedback.get(r.id)}
        for r in load_catalogue()
    ]


@router.get("/findings")
def findings(
    _: Principal = READER,
    conn: Connection = CONN,
    rule: str | None = None,
    provider: str | None = None,
    region: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> list[dict[str, Any]]:
    return service.findings(conn, rule_id=rule, provider_id=provider, region=region,
                            limit=limit, offset=offset)


@router.get("/findings/{finding_id}")
def finding(finding_id: int, _: Principal = READER,
            conn: Connection = CONN) -> dict[str, Any]:
    return service.finding(conn, finding_id)


@router.post("/findings/{finding_id}/reidentify")
def reidentify(finding_id: int, body: ReidentifyIn,
               principal: Principal = PRINCIPAL,
               conn: Connection = CONN,
               settings: Settings = SETTINGS) -> dict[str, Any]:
    person_key = service.reidentify(conn, settings, principal, finding_id, body.reason)
    return {"finding_id": finding_id, "person_key": person_key}


@router.get("/providers")
def providers(_: Principal = READER, conn: Connection = CONN,
              limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
    return service.provider_summary(conn, limit=limit)


@router.get("/cases")
def cases(_: Principal = READER, conn: Connection = CONN,
          status: str | None = None) -> list[dict[str, Any]]:
    return service.cases(conn, status=status)


@router.post("/cases", status_code=201)
def open_case(body: CaseIn, principal: Principal = WORKER,
              conn: Connection = CONN) -> dict[str, Any]:
    case_id = service.open_case(conn, principal, body.finding_ids, body.title)
    return service.case_detail(conn, case_id)


@router.get("/cases/{case_id}")
def case(case_id: int, _: Principal = READER,
         conn: Connection = CONN) -> dict[str, Any]:
    return service.case_detail(conn, case_id)


@router.post("/cases/{case_id}/notes", status_code=201)
def note(case_id: int, body: NoteIn, principal: Principal = WORKER,
         conn: Connection = CONN) -> dict[str, Any]:
    service.add_case_note(conn, principal, case_id, body.text)
    return service.case_detail(conn, case_id)


@router.post("/cases/{case_id}/status")
def status(case_id: int, body: StatusIn, principal: Principal = WORKER,
           conn: Connection = CONN) -> dict[str, Any]:
    service.change_case_status(conn, principal, case_id, body.status,
                               recovered_amount=body.recovered_amount)
    return service.case_detail(conn, case_id)
