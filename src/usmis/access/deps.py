"""FastAPI dependencies: the verified :class:`Principal` of a request.

Usage in an endpoint::

    from usmis.access.deps import current_principal

    @router.get("/fhir/Patient/{id}")
    def read(id: str, principal: Principal = Depends(current_principal)) -> ...

A missing, malformed, expired or foreign token raises :class:`usmis.kit.errors.Unauthorized`
(401), which the application's error handler renders as an OperationOutcome.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Depends, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from usmis.access.context import RequestAccess
from usmis.access.model import DEFAULT_SCOPES, Principal, Role, parse_scopes
from usmis.access.tokens import TokenVerifier
from usmis.config import Settings
from usmis.kit.errors import Unauthorized


def verifier_for(request: Request) -> TokenVerifier:
    """One verifier per application (it caches keys / the provider's JWKS)."""
    state = request.app.state
    verifier: TokenVerifier | None = getattr(state, "token_verifier", None)
    if verifier is None:
        settings: Settings = getattr(state, "settings", None) or Settings()
        verifier = TokenVerifier(settings)
        state.token_verifier = verifier
    return verifier


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer token is required (Authorization: Bearer …)")
    return token.strip()


def principal_of(request: Request) -> Principal:
    """The verified principal; cached on the request so several callers share it."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    token = bearer_token(request)
    if token.startswith("src."):
        principal = _source_principal(request, token)
    else:
        principal = verifier_for(request).verify(token)
    request.state.principal = principal
    return principal


def _source_principal(request: Request, token: str) -> Principal:
    """A source system's own REST API token (``usmis sources add``) on the FHIR API: the
    principal of role source that a ``source`` JWT would give, checked against the source
    registry on every request (a disabled source is refused at once)."""
    from usmis.ingest import sources

    with _engine(request).connect() as conn:
        src = sources.authenticate_token(conn, token)
    return Principal(subject=f"source:{src.id}", role=Role.SOURCE, source_id=src.id,
                     scopes=parse_scopes(DEFAULT_SCOPES[Role.SOURCE]))


def _engine(request: Request) -> Engine:
    engine: Engine | None = getattr(request.app.state, "engine", None)
    if engine is None:
        from usmis.kit.db import make_engine

        settings: Settings = getattr(request.app.state, "settings", None) or Settings()
        engine = make_engine(settings.resolved_database_url)
        request.app.state.engine = engine
    return engine


async def current_principal(request: Request) -> Principal:
    """:func:`principal_of` as a dependency.  Async, so that a token the verifier already
    checked costs no trip to the thread pool (FastAPI runs a sync dependency there: two
    thread switches a request); a new token is verified in the pool (a signature check,
    or a fetch of the identity provider's keys)."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    kept = verifier_for(request).kept(bearer_token(request))
    if kept is None:
        return await run_in_threadpool(principal_of, request)
    request.state.principal = kept
    return kept


async def access_context(
    request: Request, principal: Principal = Depends(current_principal)  # noqa: B008
) -> AsyncIterator[RequestAccess]:
    """The policy decision point for this request (STORE's ``AccessContext``).

    After the endpoint has finished (its transaction committed or rolled back) the
    context writes what must outlive a rollback: denial audit entries, guard state.
    """
    settings: Settings = getattr(request.app.state, "settings", None) or Settings()
    ctx = RequestAccess(principal, settings, _engine(request),
                        spool=getattr(request.app.state, "audit_spool", None))
    try:
        yield ctx
    finally:
        # Async (no thread-pool trip for the many requests with nothing left to write).
        if ctx.needs_flush():
            await run_in_threadpool(ctx.flush)
