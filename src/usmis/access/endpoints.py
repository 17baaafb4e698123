"""HTTP endpoints of the access domain: the embedded OAuth2 issuer.

    POST /auth/token                      client_credentials (source systems) or password
                                          (embedded users) grant → bearer token (RFC 6749)
    GET  /auth/jwks.json                  the issuer's public keys (JWK Set)
    GET  /.well-known/openid-configuration, /.well-known/smart-configuration
    POST /access/break-glass              clinician: {"patient": "Patient/ID", "reason": …}
    POST /access/blocks/{subject}/clear   auditor: lift an exfiltration-guard block

Token-endpoint errors follow RFC 6749 §5.2 ({"error": ...}), not OperationOutcome, because
OAuth2 clients expect that shape.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine

from usmis.access import service
from usmis.access.deps import current_principal
from usmis.access.keys import KeyRing
from usmis.access.model import Principal
from usmis.access.tokens import embedded_issuer
from usmis.config import Settings
from usmis.kit.db import make_engine, transaction, unit_of_work
from usmis.kit.errors import UsmisError

router = APIRouter()


def settings_of(request: Request) -> Settings:
    s: Settings | None = getattr(request.app.state, "settings", None)
    return s or Settings()


def engine_of(request: Request) -> Engine:
    """The application's engine (shared with the FHIR store when it set one)."""
    engine: Engine | None = getattr(request.app.state, "engine", None)
    if engine is None:
        engine = make_engine(settings_of(request).resolved_database_url)
        request.app.state.engine = engine
    return engine


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="usmis"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


@router.post("/auth/token", include_in_schema=True)
async def token(request: Request) -> JSONResponse:
    """OAuth2 token endpoint (application/x-www-form-urlencoded)."""
    body = (await request.body()).decode("utf-8", "replace")
    form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
    grant = form.get("grant_type", "")
    settings = settings_of(request)
    client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        import base64

        try:
            decoded = base64.b64decode(auth[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
        except (ValueError, UnicodeDecodeError):
            return _oauth_error("invalid_client", "malformed basic credentials", 401)
    try:
        with transaction(engine_of(request)) as conn:
            if grant == "client_credentials":
                if not client_id or not client_secret:
                    return _oauth_error("invalid_client", "client credentials are required", 401)
                issued = service.token_for_client(
                    conn, settings, client_id, client_secret, scope=form.get("scope")
                )
            elif grant == "password":
                issued = service.token_for_user(
                    conn,
                    settings,
                    form.get("username", ""),
                    password=form.get("password", ""),
                    scope=form.get("scope"),
                )
            else:
                return _oauth_error("unsupported_grant_type", "use client_credentials or password")
            service.record_login(conn, settings, issued.principal, outcome="success")
    except UsmisError as exc:
        if exc.status == 401:
            error = "invalid_client" if grant == "client_credentials" else "invalid_grant"
            return _oauth_error(error, exc.message, 401 if error == "invalid_client" else 400)
        return _oauth_error("invalid_request", exc.message)
    payload: dict[str, Any] = {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    if issued.principal.patient_id:
        payload["patient"] = issued.principal.patient_id  # SMART launch context
    return JSONResponse(payload, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@router.get("/auth/jwks.json")
def jwks(request: Request) -> dict[str, Any]:
    return KeyRing(settings_of(request)).jwks()


@router.get("/.well-known/openid-configuration")
def openid_configuration(request: Request) -> dict[str, Any]:
    s = settings_of(request)
    base = s.base_url.rstrip("/")
    return {
        "issuer": embedded_issuer(s),
        "token_endpoint": f"{base}/auth/token",
        "jwks_uri": f"{base}/auth/jwks.json",
        "grant_types_supported": ["client_credentials", "password"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }


@router.get("/.well-known/smart-configuration")
def smart_configuration(request: Request) -> dict[str, Any]:
    s = settings_of(request)
    base = s.base_url.rstrip("/")
    return {
        "issuer": embedded_issuer(s),
        "token_endpoint": f"{base}/auth/token",
        "jwks_uri": f"{base}/auth/jwks.json",
        "grant_types_supported": ["client_credentials", "password"],
        "scopes_supported": ["patient/*.rs", "user/*.rs", "system/*.cruds"],
        "capabilities": ["client-confidential-symmetric", "permission-v2", "permission-v1"],
    }


# --- break-the-glass, guard administration --------------------------------------------
class EmergencyIn(BaseModel):
    patient: str  # "Patient/ID" or "ID"
    reason: str


@router.post("/access/break-glass", status_code=201)
def break_glass(
    body: EmergencyIn, request: Request, p: Principal = Depends(current_principal)  # noqa: B008
) -> dict[str, str]:
    """Declare an emergency: time-limited access to one patient, reviewed by an auditor."""
    patient = body.patient.removeprefix("Patient/")
    with unit_of_work(engine_of(request), write=True) as conn:
        grant = service.declare_emergency(conn, settings_of(request), p, patient, body.reason)
    return {"grant": grant.id, "patient": f"Patient/{grant.patient_id}",
            "expires": grant.expires_at.isoformat()}


@router.post("/access/blocks/{subject}/clear")
def clear_block(
    subject: str, request: Request, p: Principal = Depends(current_principal)  # noqa: B008
) -> dict[str, str]:
    """An auditor lifts the exfiltration guard's block after review."""
    with unit_of_work(engine_of(request), write=True) as conn:
        service.clear_block(conn, settings_of(request), p, subject)
    return {"unblocked": subject}


