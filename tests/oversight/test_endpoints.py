"""The oversight API over real HTTP (FastAPI TestClient, real tokens, both backends)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from usmis.access.tokens import issue_token
from usmis.app import create_app
from usmis.config import Settings
from usmis.kit.db import make_engine, transaction
from usmis.oversight import repository as repo
from usmis.oversight import service

from .test_service import small_extract


@pytest.fixture
def client(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    service.run_all(settings, extract=small_extract(tmp_path / "extract"), threads=1,
                    memory_limit="500MB")
    engine = make_engine(settings.resolved_database_url)
    with transaction(engine) as conn:
        repo.save_pseudonyms(conn, [("ps-man", "mpi-person-2")])
    engine.dispose()
    with TestClient(create_app(settings)) as c:
        yield c


def auth(settings: Settings, role: str, **kw: str) -> dict[str, str]:
    token = issue_token(settings, subject=f"{role}-1", role=role, **kw)
    return {"Authorization": f"Bearer {token}"}


def test_findings_providers_cases_and_reidentification(client: TestClient,
                                                       settings: Settings) -> None:
    inv = auth(settings, "investigator")
    assert client.get("/oversight/findings").status_code == 401
    denied = client.get("/oversight/findings", headers=auth(settings, "clinician", org="P1"))
    assert denied.status_code == 403
    assert denied.json()["resourceType"] == "OperationOutcome"

    findings = client.get("/oversight/findings", headers=inv).json()
    assert len(findings) == 3
    assert findings[0]["expected_recovery"] >= findings[-1]["expected_recovery"]
    one = client.get(f"/oversight/findings/{findings[0]['id']}", headers=inv).json()
    assert one["evidence"]
    assert client.get("/oversight/findings/999999", headers=inv).status_code == 404
    by_rule = client.get("/oversight/findings", params={"rule": "sex_age_incompatible"},
                         headers=inv).json()
    assert [f["item_ids"] for f in by_rule] == [["c3"]]

    providers = client.get("/oversight/providers", headers=auth(settings, "auditor")).json()
    assert {p["provider_id"] for p in providers} == {"P1", "P2"}
    rules = client.get("/oversight/rules", headers=inv).json()
    assert len(rules) == 11

    # Auditors read, only investigators work cases.
    body = {"title": "Cervical screening of men", "finding_ids": [by_rule[0]["id"]]}
    assert client.post("/oversight/cases", json=body,
                       headers=auth(settings, "auditor")).status_code == 403
    case = client.post("/oversight/cases", json=body, headers=inv)
    assert case.status_code == 201
    case_id = case.json()["id"]
    r = client.post(f"/oversight/cases/{case_id}/notes", json={"text": "asked clinic"},
                    headers=inv)
    assert r.status_code == 201
    r = client.post(f"/oversight/cases/{case_id}/status", json={"status": "confirmed",
                    "recovered_amount": 3000}, headers=inv)
    assert r.json()["status"] == "confirmed"
    bad = client.post(f"/oversight/cases/{case_id}/status", json={"status": "cleared"},
                      headers=inv)
    assert bad.status_code == 409
    assert client.post(f"/oversight/cases/{case_id}/status", json={"status": "reopen"},
                       headers=inv).status_code == 400
    assert client.get("/oversight/cases", headers=inv).json()[0]["status"] == "confirmed"

    fid = by_rule[0]["id"]
    url = f"/oversight/findings/{fid}/reidentify"
    assert client.post(url, json={"reason": "case"}, headers=auth(settings, "auditor")
                       ).status_code == 403
    r = client.post(url, json={"reason": "case 1 evidence"}, headers=inv)
    assert r.status_code == 200
    assert r.json()["person_key"] == "mpi-person-2"
