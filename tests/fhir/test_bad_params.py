"""Parameters of the right shape but impossible values are a 400 with an OperationOutcome,
never a 500 (a date that does not exist; a negative count on the audit log; a parameter
the audit log is not searched by)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from usmis.access.tokens import issue_token
from usmis.config import Settings

from .conftest import make_patient


@pytest.mark.parametrize("path", ["/fhir/_history", "/fhir/Patient/_history",
                                  "/fhir/Patient/{pid}/$everything"])
@pytest.mark.parametrize("value", ["2024-02-31", "2024-02-28T24:30:00Z", "2024-13"])
def test_an_instant_that_does_not_exist_is_a_400(client: TestClient, path: str,
                                                  value: str) -> None:
    pid = client.post("/fhir/Patient", json=make_patient()).json()["id"]
    r = client.get(path.format(pid=pid), params={"_since": value})
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(("params", "where"), [
    ({"_count": "-1"}, "_count"), ({"_offset": "-5"}, "_count"), ({"_count": "x"}, "_count"),
    ({"entity": "Patient/1"}, "entity"), ({"emergency": "yes"}, "emergency"),
])
def test_the_audit_log_refuses_what_it_cannot_search_by(
    client: TestClient, settings: Settings, params: dict[str, str], where: str
) -> None:
    auditor = issue_token(settings, subject="dpo", role="auditor")
    r = client.get("/fhir/AuditEvent", params=params,
                   headers={"Authorization": f"Bearer {auditor}"})
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"] == [where]
    ok = client.get("/fhir/AuditEvent", params={"_count": "0", "emergency": "false"},
                    headers={"Authorization": f"Bearer {auditor}"})
    assert ok.status_code == 200
