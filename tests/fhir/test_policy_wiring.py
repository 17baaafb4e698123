"""The store asks the access policy on every read and search (wiring, not the policy)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from usmis.access.tokens import issue_token
from usmis.config import Settings

from .conftest import make_observation, make_patient


def test_patient_token_sees_only_own_record(client: TestClient, settings: Settings) -> None:
    mine = client.post("/fhir/Patient", json=make_patient()).json()["id"]
    other = client.post("/fhir/Patient", json=make_patient(iin="850505400111")).json()["id"]
    client.post("/fhir/Observation", json=make_observation(mine))
    client.post("/fhir/Observation", json=make_observation(other))
    token = issue_token(settings, subject="p-user", role="patient", patient=mine)
    me = TestClient(client.app, raise_server_exceptions=False)
    me.headers["Authorization"] = f"Bearer {token}"
    assert me.get(f"/fhir/Patient/{mine}").status_code == 200
    r = me.get(f"/fhir/Patient/{other}")
    assert r.status_code in (403, 404)
    assert r.json()["resourceType"] == "OperationOutcome"
    found = me.get("/fhir/Observation").json()
    assert found["total"] == 1  # totals never count what the caller may not see
    assert found["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{mine}"
    assert me.post("/fhir/Observation", json=make_observation(mine)).status_code == 403
    assert me.get(f"/fhir/Patient/{other}/$everything").status_code in (403, 404)
