"""create_app(): the FastAPI application — routers, lifespan, one error handler."""

from __future__ import annotations

from fastapi import FastAPI

from usmis.config import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    from usmis.access.endpoints import router as access_router
    from usmis.audit.endpoints import router as audit_router
    from usmis.fhir.endpoints import router as fhir_router
    from usmis.ingest.endpoints import router as ingest_router
    from usmis.mpi.endpoints import router as mpi_router
    from usmis.oversight.endpoints import router as oversight_router
    from usmis.web.endpoints import router as web_router

    app = FastAPI(title="USMIS", version="0.1.0")
    app.state.settings = settings
    for router in (
        access_router,
        audit_router,
        ingest_router,
        mpi_router,
        oversight_router,
        web_router,
        fhir_router,
    ):
        app.include_router(router)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
