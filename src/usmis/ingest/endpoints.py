"""HTTP endpoints of the ingest domain.

- ``POST /ingest/fhir`` and ``POST /ingest/fhir/{type}``: the FHIR REST channel.  A
  source posts a resource or a Bundle with its credential (the API token from
  ``usmis sources add``, or an access token of role ``source``).  The payload is committed
  to the inbox and answered ``202 Accepted`` with an OperationOutcome naming the inbox
  messages; the worker stores it.  What a source posts is recorded as its own.
  A body of type ``application/fhir+ndjson`` (or ``application/x-ndjson``) carries many
  payloads, one per line (FHIR bulk data's format): each line is its own inbox message, all
  committed together; a bad line becomes a dead letter and an ``error`` issue naming its
  line, and never rejects the others (``202`` while any line was accepted, else ``400``).
- Admin API (role admin): ``/ingest/sources`` (list, add, show, disable, enable),
  ``/ingest/report``, ``/ingest/deadletters`` (list, show, replay).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from usmis.config import Settings
from usmis.ingest import deadletters, inbox, quality, sources
from usmis.ingest.mapping import fhir as fhir_mapping
from usmis.ingest.mapping.common import Reject
from usmis.ingest.model import Incoming, Source, token_source
from usmis.kit.db import transaction
from usmis.kit.errors import BadRequest, Forbidden, Unauthorized

router = APIRouter()
_FHIR_JSON = "application/fhir+json"
_NDJSON = {"application/fhir+ndjson", "application/x-ndjson", "application/ndjson"}
MAX_BODY = 32 * 1024 * 1024
MAX_ISSUES = 100  # rejected lines named one by one in an answer; the rest are counted


def _engine(request: Request) -> Engine:
    engine: Engine | None = getattr(request.app.state, "engine", None)
    if engine is None:
        from usmis.kit.db import make_engine

        engine = make_engine(_settings(request).resolved_database_url)
        request.app.state.engine = engine
    return engine


def _settings(request: Request) -> Settings:
    s: Settings | None = getattr(request.app.state, "settings", None)
    return s or Settings()


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer token is required (Authorization: Bearer …)")
    return token.strip()


def _source_of(request: Request, conn: Any) -> Source:
    """The source behind the request's credential: its API token, or a JWT of role source."""
    token = _bearer(request)
    if token_source(token) is not None:
        return sources.authenticate_token(conn, token)
    from usmis.access.deps import principal_of

    principal = principal_of(request)
    if str(principal.role) != "source" or not principal.source_id:
        raise Forbidden("only source systems deliver data through this channel")
    return sources.usable(conn, principal.source_id, "rest")


def _admin(request: Request) -> None:
    from usmis.access.deps import principal_of

    principal = principal_of(request)
    if str(principal.role) != "admin":
        raise Forbidden("the ingest admin API is for role admin")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _issue(severity: str, code: str, text: str,
           expression: list[str] | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": text}
    if expression:
        issue["expression"] = expression
    return issue


@router.post("/ingest/fhir")
@router.post("/ingest/fhir/{resource_type}")
async def post_fhir(request: Request, resource_type: str | None = None) -> Response:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise BadRequest("payload too large", expression=["body"])
    # The database work runs in the thread pool: done on the event loop it made the server
    # take one post at a time, each waiting for its commit.
    return await run_in_threadpool(_receive_fhir, request, body)


def _receive_fhir(request: Request, body: bytes) -> Response:
    settings, engine = _settings(request), _engine(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    many = ctype in _NDJSON
    parts = [ln for ln in body.split(b"\n") if ln.strip()] if many else [body]
    if not parts:
        raise BadRequest("the body holds no payload", expression=["body"])
    received: list[int] = []
    rejected: list[tuple[int, Reject]] = []
    with transaction(engine) as conn:
        src = _source_of(request, conn)
        if "fhir" not in src.formats:
            raise Forbidden("source is not registered for FHIR payloads")
        for line, raw in enumerate(parts, 1):
            reject = None
            try:
                mapped = fhir_mapping.map_payload(raw, src.id)
                mid, event = mapped.message_id, mapped.event_time
            except Reject as r:
                reject, mid, event = r, "", None
                rejected.append((line, r))
            got = inbox.receive(conn, settings, Incoming(
                source_id=src.id, channel="rest", format="fhir",
                message_id=mid or (f"rest#{line}" if many else "rest"),
                raw=raw, event_time=event), reject)
            if reject is None:
                received.append(got.inbox_id)
    # Rejected payloads are kept as dead letters, and the sender is told exactly what is
    # wrong: which line (for NDJSON), which rule, which element.
    issues = [_issue("error", "invalid", f"{f'line {line}: ' if many else ''}"
                     f"{r.rule}: {r.detail}", [r.field]) for line, r in rejected[:MAX_ISSUES]]
    if len(rejected) > MAX_ISSUES:
        issues.append(_issue("error", "invalid",
                             f"{len(rejected) - MAX_ISSUES} more line(s) rejected"))
    if received:
        issues.insert(0, _issue("information", "informational",
                                f"accepted into the inbox: {len(received)} message(s) "
                                f"{','.join(str(i) for i in received[:50])}"))
    return Response(orjson.dumps({"resourceType": "OperationOutcome", "issue": issues}),
                    status_code=202 if received else 400, media_type=_FHIR_JSON)


class SourceIn(BaseModel):
    id: str
    name: str
    kind: str
    channels: list[str]
    formats: list[str]
    mapping: str | None = None
    mllp_peers: list[str] | None = None
    mllp_secret: str | None = None
    cert_fingerprint: str | None = None


@router.get("/ingest/sources")
def list_sources(request: Request) -> Response:
    _admin(request)
    with _engine(request).connect() as conn:
        return _json([s.public() for s in sources.list_all(conn)])


@router.post("/ingest/sources")
def add_source(request: Request, body: SourceIn) -> Response:
    _admin(request)
    with transaction(_engine(request)) as conn:
        creds = sources.add_source(
            conn, source_id=body.id, name=body.name, kind=body.kind, channels=body.channels,
            formats=body.formats, mapping=body.mapping, mllp_peers=body.mllp_peers,
            mllp_secret=body.mllp_secret, cert_fingerprint=body.cert_fingerprint)
        out = sources.get(conn, body.id).public()
    # The API token is shown once, here; only its hash is stored.
    return _json({**out, "token": creds.token}, 201)


@router.get("/ingest/sources/{source_id}")
def show_source(request: Request, source_id: str) -> Response:
    _admin(request)
    with _engine(request).connect() as conn:
        return _json(sources.get(conn, source_id).public())


@router.post("/ingest/sources/{source_id}/disable")
def disable_source(request: Request, source_id: str) -> Response:
    _admin(request)
    with transaction(_engine(request)) as conn:
        sources.set_enabled(conn, source_id, False)
    return _json({"id": source_id, "enabled": False})


@router.post("/ingest/sources/{source_id}/enable")
def enable_source(request: Request, source_id: str) -> Response:
    _admin(request)
    with transaction(_engine(request)) as conn:
        sources.set_enabled(conn, source_id, True)
    return _json({"id": source_id, "enabled": True})


@router.get("/ingest/report")
def source_report(request: Request, source: str | None = None) -> Response:
    _admin(request)
    with _engine(request).connect() as conn:
        return _json(quality.report(conn, source))


@router.get("/ingest/deadletters")
def list_dead_letters(request: Request, source: str | None = None, rule: str | None = None,
                      status: str = "open", limit: int = 100, after: int = 0) -> Response:
    _admin(request)
    with _engine(request).connect() as conn:
        return _json(deadletters.list_letters(conn, source_id=source, rule=rule,
                                              status=status or None, limit=min(limit, 1000),
                                              after_id=after))


@router.get("/ingest/deadletters/{dl_id}")
def show_dead_letter(request: Request, dl_id: int) -> Response:
    _admin(request)
    with _engine(request).connect() as conn:
        return _json(deadletters.show(conn, _settings(request), dl_id))


@router.post("/ingest/deadletters/{dl_id}/replay")
async def replay_dead_letter(request: Request, dl_id: int) -> Response:
    body = await request.body()

    def work() -> Response:
        _admin(request)
        with transaction(_engine(request)) as conn:
            inbox_id = deadletters.replay(conn, _settings(request), dl_id,
                                          content=body or None)
        return _json({"dead_letter": dl_id, "inbox_id": inbox_id, "status": "pending"}, 202)

    return await run_in_threadpool(work)
