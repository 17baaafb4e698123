"""HTTP endpoints of the master patient index.

FHIR operations (registered here, *before* the FHIR store's generic ``/fhir/{type}/{id}``
routes — ``usmis.app`` includes this router first):

- ``POST /fhir/Patient/$match`` — IHE PDQm ITI-119 (Parameters in, searchset Bundle out);
- ``GET|POST /fhir/Patient/$ihe-pix?sourceIdentifier=system|value[&targetSystem=…]`` —
  IHE PIXm ITI-83.

The registrar's API (JSON, base ``/mpi``): the review queue and its decisions, link,
unlink, merge, split, revert, a person's records and history, stats.  Registrar and admin
roles only; every change carries a reason.  Each of these calls is written to the audit
chain in its own transaction (if the entry cannot be written, nothing happens): who, which
source Patients and persons, which operation — the free-text reason stays in the index's
link history, out of the chain that patients read.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool

from usmis.access.deps import current_principal
from usmis.access.model import Principal
from usmis.audit import service as audit
from usmis.audit.model import AuditRecord
from usmis.config import Settings
from usmis.fhir.context import AccessContext, SystemAccess
from usmis.kit.db import unit_of_work
from usmis.kit.errors import BadRequest, Forbidden
from usmis.mpi import lookup, service

FHIR_JSON = "application/fhir+json"
router = APIRouter(tags=["mpi"])

_PRINCIPAL = Depends(current_principal)
REGISTRAR_ROLES = frozenset({"registrar", "admin"})


def _access_context() -> Callable[..., Any]:
    """The FHIR store's access context dependency (policy + audit), shared by $match."""
    fhir = importlib.import_module("usmis.fhir.endpoints")
    dep = getattr(fhir, "_access_dependency", None)
    if callable(dep):
        resolved = dep()
        if callable(resolved):
            return resolved  # type: ignore[no-any-return]

    def _system(principal: Principal = _PRINCIPAL) -> AccessContext:
        return SystemAccess(source_id=principal.source_id, author_org=principal.organization_id)

    return _system


ACCESS = Depends(_access_context())


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _fhir(content: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=FHIR_JSON)


def _may_look_up(principal: Principal) -> None:
    if not (principal.allows("Patient", "r") or principal.allows("Patient", "s")):
        raise Forbidden("the token's scopes do not allow reading Patient")


def _registrar(principal: Principal = _PRINCIPAL) -> Principal:
    if str(getattr(principal.role, "value", principal.role)) not in REGISTRAR_ROLES:
        raise Forbidden("only a registrar or an administrator may do this")
    return principal


REGISTRAR = Depends(_registrar)


def _actor(principal: Principal) -> str:
    return f"{getattr(principal.role, 'value', principal.role)}:{principal.subject}"


def _audit(conn: Connection, request: Request, principal: Principal, action: str, *,
           patients: list[str] | tuple[str, ...] = (), persons: tuple[str | None, ...] = (),
           **detail: Any) -> None:
    """One audit entry for a registrar call, in the call's own transaction."""
    audit.append(conn, _settings(request), AuditRecord(
        action=action, subject=principal.subject,
        role=str(getattr(principal.role, "value", principal.role)),
        organization_id=principal.organization_id, purpose="HOPERAT", resource_type="Patient",
        entities=tuple(f"Patient/{p}" for p in patients), patients=tuple(patients),
        persons=tuple(p for p in persons if p),
        detail=json.dumps({"mpi": detail}, sort_keys=True, default=str),
    ))


# ---------------------------------------------------------------------------- FHIR operations


@router.post("/fhir/Patient/$match")
async def patient_match(
    request: Request, principal: Principal = _PRINCIPAL, access: AccessContext = ACCESS
) -> Response:
    _may_look_up(principal)
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None

    def work() -> Response:
        with unit_of_work(_engine(request), write=False) as conn:
            bundle = lookup.match_bundle(
                conn, _settings(request), access, body, base_url=_base(request)
            )
        return _fhir(bundle)

    return await run_in_threadpool(work)  # the database work off the event loop


def _pix(request: Request, access: AccessContext, source: str, targets: list[str]) -> Response:
    with unit_of_work(_engine(request), write=False) as conn:
        params = lookup.cross_reference(
            conn, _settings(request), access, source, targets or None, base_url=_base(request)
        )
    return _fhir(params)


_SOURCE_ID = Query("", alias="sourceIdentifier")
_TARGET_SYSTEM = Query(None, alias="targetSystem")


@router.get("/fhir/Patient/$ihe-pix")
def patient_pix(
    request: Request,
    source_identifier: str = _SOURCE_ID,
    target_system: list[str] | None = _TARGET_SYSTEM,
    principal: Principal = _PRINCIPAL,
    access: AccessContext = ACCESS,
) -> Response:
    _may_look_up(principal)
    return _pix(request, access, source_identifier, target_system or [])


@router.post("/fhir/Patient/$ihe-pix")
async def patient_pix_post(
    request: Request, principal: Principal = _PRINCIPAL, access: AccessContext = ACCESS
) -> Response:
    _may_look_up(principal)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None
    source = ""
    targets: list[str] = []
    for p in (body or {}).get("parameter") or [] if isinstance(body, dict) else []:
        if p.get("name") == "sourceIdentifier":
            v = p.get("valueIdentifier") or {}
            source = f"{v.get('system', '')}|{v.get('value', '')}"
        elif p.get("name") == "targetSystem":
            targets.append(str(p.get("valueUri") or ""))
    return await run_in_threadpool(_pix, request, access, source, targets)


# ---------------------------------------------------------------------------- registrar API


class Decision(BaseModel):
    decision: Literal["link", "not-link"]
    reason: str = Field(min_length=1, max_length=2000)


class LinkRequest(BaseModel):
    patient_id: str = Field(min_length=1, max_length=64)
    person_key: str = Field(min_length=1, max_length=32)
    reason: str = Field(min_length=1, max_length=2000)


class UnlinkRequest(BaseModel):
    patient_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=2000)


class MergeRequest(BaseModel):
    from_person: str = Field(min_length=1, max_length=32)
    into_person: str = Field(min_length=1, max_length=32)
    reason: str = Field(min_length=1, max_length=2000)


class SplitRequest(BaseModel):
    person_key: str = Field(min_length=1, max_length=32)
    patient_ids: list[str] = Field(min_length=1)
    reason: str = Field(min_length=1, max_length=2000)


class RevertRequest(BaseModel):
    operation_id: str = Field(min_length=1, max_length=32)
    reason: str = Field(min_length=1, max_length=2000)


@router.get("/mpi/review")
def review_list(
    request: Request,
    status: str = "open",
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    principal: Principal = REGISTRAR,
) -> dict[str, Any]:
    with unit_of_work(_engine(request), write=True) as conn:
        items = service.list_review(conn, status=status, limit=limit, offset=offset)
        _audit(conn, request, principal, "search", patients=[i.patient_id for i in items],
               persons=tuple(i.candidate_person_key for i in items), operation="review-list")
    return {
        "items": [
            {"id": i.id, "patient_id": i.patient_id, "candidate_person_key":
             i.candidate_person_key, "weight": round(i.score, 3),
             "probability": round(i.probability, 6), "status": i.status,
             "created_at": i.created_at.isoformat()}
            for i in items
        ]
    }  # fmt: skip


@router.post("/mpi/review/{review_id}")
def review_decide(
    review_id: int, body: Decision, request: Request, principal: Principal = REGISTRAR
) -> dict[str, Any]:
    with unit_of_work(_engine(request), write=True) as conn:
        op = service.decide_review(
            conn, review_id, body.decision, actor=_actor(principal), reason=body.reason
        )
        _audit(conn, request, principal, "update", operation="review", review_id=review_id,
               decision=body.decision, operation_id=op)
    return {"review_id": review_id, "decision": body.decision, "operation_id": op}


@router.post("/mpi/link")
def op_link(
    body: LinkRequest, request: Request, principal: Principal = REGISTRAR
) -> dict[str, Any]:
    with unit_of_work(_engine(request), write=True) as conn:
        op = service.link(conn, body.patient_id, body.person_key, actor=_actor(principal),
                          reason=body.reason)  # fmt: skip
        _audit(conn, request, principal, "update", patients=[body.patient_id],
               persons=(body.person_key,), operation="link", operation_id=op)
    return {"operation_id": op}


@router.post("/mpi/unlink")
def op_unlink(
    body: UnlinkRequest, request: Request, principal: Principal = REGISTRAR
) -> dict[str, Any]:
    with unit_of_work(_engine(request), write=True) as conn:
        person = service.unlink(conn, body.patient_id, actor=_actor(principal), reason=body.reason)
        _audit(conn, request, principal, "update", patients=[body.patient_id],
               persons=(person,), operation="unlink")
    return {"person_key": person}


@router.post("/mpi/merge")
def op_merge(
    body: MergeRequest, request: Request, principal: Principal = REGISTRAR
) -> dict[str, Any]:
    with unit_of_work(_engine(request), write=True) as conn:
        op = service.merge(conn, body.from_person, body.into_person, actor=_actor(principal),
                           reason=body.reason)  # fmt: skip
        _audit(conn, request, principal, "update", persons=(body.from_person, body.into_person),
               operation="merge", operation_id=op)
    return {"operation_id": op}


@router.post("/mpi/split")
def op_split(
    body: SplitRequest, request: Request, principal: Principal = REGISTRAR
) -> dict[str, Any]:
    with unit_of_work(_engine(request), write=True) as conn:
        person = service.split(conn, body.person_key, body.patient_ids, actor=_actor(principal),
                               reason=body.reason)  # fmt: skip
        _audit(conn, request, principal, "update", patients=body.patient_ids,
               persons=(body.person_key, person), operation="split")
    return {"person_key": person}


@router.post("/mpi/revert")
def op_revert(
    body: RevertRequest, request: Request, principal: Principal = REGISTRAR
) -> dict[str, Any]:
    with unit_of_work(_engine(request), write=True) as conn:
        op = service.revert(conn, body.operation_id, actor=_actor(principal), reason=body.reason)
        _audit(conn, request, principal, "update", operation="revert",
               reverted=body.operation_id, operation_id=op)
    return {"operation_id": op}


@router.get("/mpi/persons/{person_key}")
def person_detail(
    person_key: str, request: Request, principal: Principal = REGISTRAR
) -> dict[str, Any]:
    with unit_of_work(_engine(request), write=True) as conn:
        key = service.resolve_person(conn, person_key)
        patients = service.patients_of(conn, key)
        history = {p: service.history(conn, p) for p in patients}
        _audit(conn, request, principal, "read", patients=patients, persons=(key,),
               operation="person")
    return {
        "person_key": key,
        "patients": patients,
        "history": {
            p: [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in e.items()}
                for e in events]
            for p, events in history.items()
        },
    }  # fmt: skip


@router.get("/mpi/stats")
def mpi_stats(request: Request, principal: Principal = REGISTRAR) -> dict[str, Any]:
    with unit_of_work(_engine(request), write=False) as conn:
        return service.stats(conn)
