"""The embedded issuer over HTTP: users, source-system clients, /auth/token, JWKS."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from usmis.access import service
from usmis.access.model import Role
from usmis.access.tokens import TokenVerifier
from usmis.app import create_app
from usmis.config import Settings
from usmis.kit.db import make_engine, transaction


def test_client_credentials_grant_for_a_source_system(settings: Settings) -> None:
    with transaction(make_engine(settings.resolved_database_url)) as conn:
        secret = service.add_client(conn, client_id="his-1", source="his-almaty", org="org-5")
    client = TestClient(create_app(settings))
    r = client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/Observation.cru"},
        auth=("his-1", secret),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "system/Observation.cru"
    p = TokenVerifier(settings).verify(body["access_token"])
    assert (p.role, p.source_id, p.organization_id) == (Role.SOURCE, "his-almaty", "org-5")
    # Client secret in the form body works too (client_secret_post).
    r = client.post("/auth/token", data={"grant_type": "client_credentials",
                                         "client_id": "his-1", "client_secret": secret})
    assert r.status_code == 200
    # Wrong secret, unknown client, unsupported grant, scope beyond the grant.
    r = client.post("/auth/token", data={"grant_type": "client_credentials"},
                    auth=("his-1", "nope"))
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
    r = client.post("/auth/token", data={"grant_type": "client_credentials"}, auth=("x", "y"))
    assert r.status_code == 401
    r = client.post("/auth/token", data={"grant_type": "implicit"})
    assert r.json()["error"] == "unsupported_grant_type"
    r = client.post("/auth/token", data={"grant_type": "client_credentials",
                                         "scope": "user/*.rs"}, auth=("his-1", secret))
    assert r.status_code == 401


def test_password_grant_for_an_embedded_user(settings: Settings) -> None:
    with transaction(make_engine(settings.resolved_database_url)) as conn:
        service.add_user(conn, username="dr-a", role="clinician", org="org-1",
                         speciality="therapy", password="correct horse")
    client = TestClient(create_app(settings))
    r = client.post("/auth/token", data={"grant_type": "password", "username": "dr-a",
                                         "password": "correct horse"})
    assert r.status_code == 200, r.text
    p = TokenVerifier(settings).verify(r.json()["access_token"])
    assert (p.subject, p.organization_id, p.speciality) == ("dr-a", "org-1", "therapy")
    r = client.post("/auth/token", data={"grant_type": "password", "username": "dr-a",
                                         "password": "wrong"})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")
    jwks = client.get("/auth/jwks.json").json()
    assert jwks["keys"][0]["kty"] == "OKP"
    assert "d" not in jwks["keys"][0]  # never the private part
    assert client.get("/.well-known/smart-configuration").json()["token_endpoint"].endswith(
        "/auth/token"
    )


def test_cli_users_add_and_token_for_user(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usmis.cli import app

    monkeypatch.setenv("USMIS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("USMIS_DATABASE_URL", settings.resolved_database_url)
    runner = CliRunner()
    r = runner.invoke(app, ["users", "add", "pat-user", "--role", "patient", "--patient", "p-9"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["users", "add", "pat-user", "--role", "patient", "--patient", "p-9"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["token", "--user", "pat-user"])
    assert r.exit_code == 0, r.output
    p = TokenVerifier(settings).verify(r.output.strip())
    assert (p.role, p.patient_id) == (Role.PATIENT, "p-9")
    r = runner.invoke(app, ["clients", "add", "lis-1", "--source", "lis-astana"])
    assert r.exit_code == 0
    assert "client_secret=" in r.output
    r = runner.invoke(app, ["signing-keys", "rotate"])
    assert r.exit_code == 0
    assert "active signing key" in r.output
