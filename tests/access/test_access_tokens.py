"""Tokens and principals: the embedded issuer, rotation, external OIDC via JWKS, the CLI."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from usmis.access.deps import current_principal
from usmis.access.keys import KeyRing
from usmis.access.model import Principal, Role, Scope, ScopeError, parse_scopes
from usmis.access.tokens import TokenVerifier, issue_token
from usmis.app import create_app
from usmis.config import Settings
from usmis.kit.errors import Unauthorized, UsmisError


@pytest.fixture
def embedded(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path}/x.db")


def test_clinician_token_round_trips_into_a_principal(embedded: Settings) -> None:
    token = issue_token(
        embedded, subject="dr-1", role="clinician", org="org-7", speciality="cardiology",
        scope="user/Observation.rs user/Patient.r",
    )
    p = TokenVerifier(embedded).verify(token)
    assert p.role is Role.CLINICIAN
    assert (p.subject, p.organization_id, p.speciality) == ("dr-1", "org-7", "cardiology")
    assert p.allows("Observation", "s")
    assert p.allows("Patient", "r")
    assert not p.allows("Patient", "s")
    assert not p.allows("Observation", "c")
    assert p.purpose == "TREAT"
    assert p.expires_at is not None
    assert p.expires_at > datetime.now(UTC)


@pytest.mark.parametrize(
    ("role", "extra", "attr", "value"),
    [
        ("patient", {"patient": "pat-1"}, "patient_id", "pat-1"),
        ("source", {"source": "his-almaty"}, "source_id", "his-almaty"),
        ("auditor", {}, "role", Role.AUDITOR),
        ("registrar", {}, "role", Role.REGISTRAR),
        ("investigator", {"purpose": "FRAUD"}, "purpose_of_use", "FRAUD"),
        ("admin", {}, "role", Role.ADMIN),
    ],
)
def test_every_role_has_a_token(
    embedded: Settings, role: str, extra: dict[str, str], attr: str, value: object
) -> None:
    p = TokenVerifier(embedded).verify(issue_token(embedded, subject="s", role=role, **extra))
    assert getattr(p, attr) == value


def test_role_specific_claims_are_required(embedded: Settings) -> None:
    with pytest.raises(ValueError, match="Patient id"):
        issue_token(embedded, subject="s", role="patient")
    with pytest.raises(ValueError, match="source id"):
        issue_token(embedded, subject="s", role="source")
    with pytest.raises(ValueError, match="organization"):
        issue_token(embedded, subject="s", role="clinician")


def test_expired_tampered_and_foreign_tokens_are_refused(
    embedded: Settings, tmp_path: Path
) -> None:
    v = TokenVerifier(embedded)
    expired = issue_token(embedded, subject="a", role="admin", ttl_seconds=-120)
    with pytest.raises(Unauthorized, match="expired"):
        v.verify(expired)
    good = issue_token(embedded, subject="a", role="admin")
    head, body, sig = good.split(".")
    claims = json.loads(jwt.utils.base64url_decode(body))
    claims["role"] = "auditor"
    forged = ".".join([head, jwt.utils.base64url_encode(json.dumps(claims).encode()).decode(), sig])
    with pytest.raises(Unauthorized):
        v.verify(forged)
    other = Settings(data_dir=tmp_path / "other")
    with pytest.raises(Unauthorized, match="current key"):
        v.verify(issue_token(other, subject="a", role="admin"))
    with pytest.raises(Unauthorized, match="malformed"):
        v.verify("not-a-jwt")
    unsigned = jwt.encode({"sub": "a", "role": "admin"}, key=None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(Unauthorized):
        v.verify(unsigned)


def test_rotation_keeps_old_tokens_valid_until_the_old_key_lapses(embedded: Settings) -> None:
    ring = KeyRing(embedded)
    old = issue_token(embedded, subject="a", role="admin", keyring=ring)
    old_kid = jwt.get_unverified_header(old)["kid"]
    new_key = ring.rotate()
    assert new_key.kid != old_kid
    new = issue_token(embedded, subject="a", role="admin", keyring=ring)
    assert jwt.get_unverified_header(new)["kid"] == new_key.kid
    v = TokenVerifier(embedded)
    assert v.verify(old).subject == "a"
    assert v.verify(new).subject == "a"
    assert {k["kid"] for k in ring.jwks()["keys"]} == {old_kid, new_key.kid}
    # Age the old key beyond rotation period + lifetime margin: it no longer verifies.
    path = embedded.data_dir / "signing-keys.json"
    doc = json.loads(path.read_text())
    aged = datetime.now(UTC) - timedelta(days=embedded.signing_key_rotation_days + 3)
    doc["keys"][0]["created"] = aged.isoformat()
    path.write_text(json.dumps(doc))
    with pytest.raises(Unauthorized):
        TokenVerifier(embedded).verify(old)
    with pytest.raises(Unauthorized):  # the verifier that had verified it (and kept it)
        v.verify(old)
    assert TokenVerifier(embedded).verify(new).subject == "a"
    assert path.stat().st_mode & 0o777 == 0o600


def test_scopes_parse_v1_and_v2_and_refuse_nonsense() -> None:
    assert parse_scopes("patient/*.read openid fhirUser") == (
        Scope("patient", "*", frozenset("rs")),
    )
    assert str(Scope.parse("system/Observation.cruds?category=laboratory")) == (
        "system/Observation.cruds"
    )
    for bad in ("patient/Observation.xyz", "nobody/*.rs", "patient-Observation", "user/.rs"):
        with pytest.raises(ScopeError):
            Scope.parse(bad)


def _app_with_dependency(settings: Settings) -> FastAPI:
    app = FastAPI()
    app.state.settings = settings

    @app.exception_handler(UsmisError)
    def _outcome(_req: Request, exc: UsmisError) -> JSONResponse:
        return JSONResponse(
            {"resourceType": "OperationOutcome",
             "issue": [{"severity": "error", "code": exc.code, "diagnostics": exc.message}]},
            status_code=exc.status,
        )

    @app.get("/whoami")
    def whoami(p: Principal = Depends(current_principal)) -> dict[str, str | None]:  # noqa: B008
        return {"sub": p.subject, "role": p.role.value, "org": p.organization_id}

    return app


def test_current_principal_dependency(embedded: Settings) -> None:
    client = TestClient(_app_with_dependency(embedded))
    r = client.get("/whoami")
    assert r.status_code == 401
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["code"] == "login"
    r = client.get("/whoami", headers={"Authorization": "Bearer garbage"})
    assert r.status_code == 401
    tok = issue_token(embedded, subject="dr-2", role="clinician", org="org-1")
    r = client.get("/whoami", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200
    assert r.json() == {"sub": "dr-2", "role": "clinician", "org": "org-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    """A real identity provider on a socket: the embedded issuer's app served by uvicorn."""
    port = _free_port()
    idp_settings = Settings(
        data_dir=tmp_path / "idp", database_url=f"sqlite:///{tmp_path}/idp.db",
        base_url=f"http://127.0.0.1:{port}",
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(idp_settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield idp_settings, f"http://127.0.0.1:{port}/auth/jwks.json"
    server.should_exit = True
    thread.join(timeout=10)


def test_production_mode_verifies_an_external_provider_from_its_jwks(
    idp: tuple[Settings, str], tmp_path: Path
) -> None:
    idp_settings, jwks_url = idp
    prod = Settings(
        data_dir=tmp_path / "prod", oidc_jwks_url=jwks_url,
        oidc_issuer=idp_settings.base_url + "/auth", oidc_audience="usmis",
    )
    v = TokenVerifier(prod, jwks_cooldown_seconds=0)
    tok = issue_token(idp_settings, subject="ext-user", role="clinician", org="org-9")
    assert v.verify(tok).organization_id == "org-9"
    # The provider rotates its key: the verifier refetches the JWKS on the unknown kid.
    KeyRing(idp_settings).rotate()
    tok2 = issue_token(idp_settings, subject="ext-user", role="auditor")
    assert v.verify(tok2).role is Role.AUDITOR
    # Our own embedded keys mean nothing in production mode.
    with pytest.raises(Unauthorized):
        v.verify(issue_token(Settings(data_dir=tmp_path / "x"), subject="a", role="admin"))


def test_cli_token_prints_a_verifiable_token(
    embedded: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usmis.cli import app

    monkeypatch.setenv("USMIS_DATA_DIR", str(embedded.data_dir))
    monkeypatch.setenv("USMIS_DATABASE_URL", embedded.resolved_database_url)
    r = CliRunner().invoke(
        app, ["token", "--role", "clinician", "--org", "org-3", "--scope", "user/*.rs"]
    )
    assert r.exit_code == 0, r.output
    p = TokenVerifier(embedded).verify(r.output.strip())
    assert (p.role, p.organization_id, p.subject) == (Role.CLINICIAN, "org-3", "clinician:org-3")
    r = CliRunner().invoke(app, ["token", "--role", "patient"])
    assert r.exit_code == 2


def test_a_verified_token_is_kept_only_until_it_expires(
    embedded: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verifier keeps what it verified (one Ed25519 check per token, not per request),
    but a kept token still expires; and a forged variant of a kept one is still checked."""
    import usmis.access.tokens as tokens

    v = TokenVerifier(embedded)
    token = issue_token(embedded, subject="a", role="admin", ttl_seconds=60)
    assert v.verify(token) is v.verify(token)  # the second answer is the kept one
    head, body, _sig = token.split(".")
    with pytest.raises(Unauthorized):
        v.verify(f"{head}.{body}.{'A' * 86}")
    later = time.time() + 60 + tokens.LEEWAY_SECONDS + 1
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    with pytest.raises(Unauthorized, match="expired"):
        v.verify(token)
