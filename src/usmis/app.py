"""create_app(): the FastAPI application — routers, lifespan, one error handler.

Every error leaves as a FHIR OperationOutcome with the status of its class in
:mod:`usmis.kit.errors` (400, 401, 403, 404, 409, 410, 412, 422, …).  Anything unexpected
is a 500 whose body says nothing about the input (the log has the traceback, keyed by
an opaque error id — never personal data).
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from usmis.config import Settings
from usmis.kit.errors import UsmisError
from usmis.kit.logging import get_logger

log = get_logger("usmis.app")
_FHIR_JSON = "application/fhir+json"


def _outcome(status: int, code: str, message: str, expression: list[str] | None = None
             ) -> Response:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": message}
    if expression:
        issue["expression"] = expression
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return Response(orjson.dumps(body), status_code=status, media_type=_FHIR_JSON)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UsmisError)
    async def _usmis_error(_request: Request, exc: UsmisError) -> Response:
        issues = getattr(exc, "issues", None)
        if issues:
            body = {"resourceType": "OperationOutcome", "issue": issues}
            resp = Response(orjson.dumps(body), status_code=exc.status, media_type=_FHIR_JSON)
        else:
            resp = _outcome(exc.status, exc.code, exc.message, exc.expression)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="usmis"'
        return resp

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_request: Request, exc: RequestValidationError) -> Response:
        locs = [".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()]
        return _outcome(400, "invalid", "the request is malformed", [loc for loc in locs if loc])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported", 401: "login", 403: "forbidden"}
        resp = _outcome(exc.status_code, code.get(exc.status_code, "processing"),
                        str(exc.detail))
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    @app.exception_handler(RecursionError)
    async def _too_deep(_request: Request, _exc: RecursionError) -> Response:
        return _outcome(400, "too-costly", "the document is nested too deeply")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        error_id = uuid.uuid4().hex[:12]
        # Frames only, no message: messages of driver errors can carry parameter values.
        frames = traceback.extract_tb(exc.__traceback__)[-4:]
        where = " < ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in reversed(frames))
        log.error("unhandled error", error_id=error_id, error_type=type(exc).__name__,
                  where=where)
        return _outcome(500, "exception", f"internal error (id {error_id})")


def serve_app() -> FastAPI:
    """The app of one ``usmis serve`` worker process (uvicorn's factory): :func:`create_app`
    with the process's garbage collector quietened (see kit.runtime.quiet_gc)."""
    from usmis.kit.runtime import quiet_gc

    app = create_app()
    quiet_gc()
    return app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    from sqlalchemy.pool import QueuePool

    from usmis.access.endpoints import router as access_router
    from usmis.audit.endpoints import router as audit_router
    from usmis.fhir.endpoints import router as fhir_router
    from usmis.ingest.endpoints import router as ingest_router
    from usmis.kit.crypto import keyring_for
    from usmis.kit.db import make_engine
    from usmis.mpi.endpoints import router as mpi_router
    from usmis.oversight.endpoints import router as oversight_router
    from usmis.web.endpoints import router as web_router

    settings.ensure_data_dir()
    url = settings.resolved_database_url
    # A pooled SQLite engine: connections stay open between requests (see make_engine).
    engine = make_engine(url, poolclass=QueuePool) if url.startswith("sqlite") else make_engine(url)

    spool = None
    if settings.audit_enabled and settings.audit_spool:
        from usmis.audit.spool import AuditSpool

        spool = AuditSpool(engine, settings)  # replays what a dead process left

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if spool is not None:
            spool.close()
        engine.dispose()

    app = FastAPI(title="USMIS", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.audit_spool = spool
    # The key file is created on first use (mode 600); the KEK never enters the database.
    app.state.keyring = keyring_for(settings.resolved_key_file)
    _install_error_handlers(app)
    # Access logs without query values (they may carry IINs); access/audit, issue 6.
    from usmis.audit.logs import install_redaction

    install_redaction()
    # FastAPI matches a request against every route of the routers before the one that
    # takes it, in this order: the routers that claim paths under /fhir first (AuditEvent,
    # Patient/$match before the FHIR router's generic /fhir/{rtype}), then the FHIR API
    # (most requests), then the rest, whose paths no FHIR route can take.
    for router in (
        audit_router,
        mpi_router,
        fhir_router,
        access_router,
        ingest_router,
        oversight_router,
        web_router,
    ):
        app.include_router(router)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers (async: no trip to the thread pool)."""
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> Response:
        """Readiness: the database answers and the schema is migrated."""
        from sqlalchemy import inspect, text

        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                migrated = inspect(conn).has_table("fhir_resource")
        except Exception:  # noqa: BLE001 - readiness reports, never raises
            return _outcome(503, "transient", "the database is not reachable")
        if not migrated:
            return _outcome(503, "transient", "the database schema is not migrated")
        return Response(orjson.dumps({"status": "ready"}), media_type="application/json")

    return app
