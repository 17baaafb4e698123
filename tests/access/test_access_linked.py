"""One person, two source Patients (linked by the patient index): care, consent and an
emergency grant at one Patient reach the other, through the real API — both the row
decision of reads and the SQL predicate of searches (totals included)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from usmis.access import repository as access_repo
from usmis.access.projection import consent_resource
from usmis.access.tokens import issue_token
from usmis.app import create_app
from usmis.config import Settings
from usmis.kit.db import make_engine, transaction
from usmis.mpi import service as mpi

ICD10 = "http://hl7.org/fhir/sid/icd-10"


def _h(settings: Settings, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings, **claims)}"}


def _create(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> str:
    r = client.post(f"/fhir/{body['resourceType']}", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _sees(client: TestClient, h: dict[str, str], rtype: str, rid: str, pid: str) -> bool:
    """Read and search agree (and the search total does not leak)."""
    read = client.get(f"/fhir/{rtype}/{rid}", headers=h).status_code
    bundle = client.get(f"/fhir/{rtype}", params={"patient": pid}, headers=h).json()
    found = [e["resource"]["id"] for e in bundle.get("entry", [])]
    assert (read == 200) == (found == [rid]) == (bundle["total"] == 1), (read, bundle)
    return read == 200


def test_care_consent_and_emergency_follow_the_person(settings: Settings) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        his_x = _h(settings, subject="client:his-x", role="source", source="his-x", org="org-X")
        his_y = _h(settings, subject="client:his-y", role="source", source="his-y", org="org-Y")
        p1 = _create(client, his_x, {"resourceType": "Patient", "gender": "male"})
        _create(client, his_x, {"resourceType": "EpisodeOfCare", "status": "active",
                                "patient": {"reference": f"Patient/{p1}"},
                                "managingOrganization": {"reference": "Organization/org-A"}})
        p2 = _create(client, his_y, {"resourceType": "Patient", "gender": "male"})
        ref2 = {"reference": f"Patient/{p2}"}
        obs = _create(client, his_y, {
            "resourceType": "Observation", "status": "final", "subject": ref2,
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}})
        hiv = _create(client, his_y, {"resourceType": "Condition", "subject": ref2,
                                      "code": {"coding": [{"system": ICD10, "code": "B20"}]}})
        dr_a = _h(settings, subject="dr-a", role="clinician", org="org-A")
        dr_z = _h(settings, subject="dr-z", role="clinician", org="org-Z")
        # Not linked yet: org-A's care is for p1 only.
        assert not _sees(client, dr_a, "Observation", obs, p2)

        engine = make_engine(settings.resolved_database_url)
        with transaction(engine) as conn:
            person = mpi.link_source_patient(conn, settings, p1)
            if mpi.link_source_patient(conn, settings, p2) != person:
                mpi.link(conn, p2, person, actor="registrar-1", reason="same person")
        with engine.connect() as conn:  # what the audit records as the persons touched
            assert access_repo.person_keys(conn, [p2, p1, p2, "never-stored"]) == [person]
            assert access_repo.person_keys(conn, ["never-stored"]) == []
        engine.dispose()

        assert _sees(client, dr_a, "Observation", obs, p2)
        assert _sees(client, dr_a, "Condition", hiv, p2)
        assert not _sees(client, dr_z, "Observation", obs, p2)

        # The person refuses HIV sharing on one record: it holds for the other too.
        me = _h(settings, subject="patient-p1", role="patient", patient=p1)
        _create(client, me, consent_resource(p1, deny_categories=["hiv"], deny_orgs=[]))
        assert not _sees(client, dr_a, "Condition", hiv, p2)
        assert _sees(client, dr_a, "Observation", obs, p2)

        # Break the glass on p1: org-Z reaches p2's data too (consent still wins).
        r = client.post("/access/break-glass", headers=dr_z,
                        json={"patient": f"Patient/{p1}", "reason": "unconscious, ER"})
        assert r.status_code in (200, 201), r.text
        assert _sees(client, dr_z, "Observation", obs, p2)
        assert not _sees(client, dr_z, "Condition", hiv, p2)

        # And a refusal of organization A on p2 hides p2's data from A entirely.
        _create(client, me, consent_resource(p1, deny_categories=[], deny_orgs=["org-A"]))
        assert not _sees(client, dr_a, "Observation", obs, p2)
