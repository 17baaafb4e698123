"""The insider: a legitimate clinician account scripted to crawl the nation is stopped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from usmis.access.tokens import issue_token
from usmis.app import create_app
from usmis.config import Settings

N = 60


@pytest.fixture
def crowd(settings: Settings) -> Iterator[tuple[TestClient, list[str], Settings]]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        his = {"Authorization": "Bearer " + issue_token(
            settings, subject="client:his-b", role="source", source="his-b", org="org-B")}
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
             "resource": {"resourceType": "Patient", "gender": "male"},
             "request": {"method": "POST", "url": "Patient"}}
            for i in range(N)
        ]}
        r = client.post("/fhir", json=bundle, headers=his)
        assert r.status_code == 200, r.text
        ids = [e["response"]["location"].split("/")[1] for e in r.json()["entry"]]
        yield client, ids, settings


def _h(settings: Settings, **claims: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(settings, **claims)}


def test_a_crawling_clinician_is_blocked_and_the_auditor_alerted(
    crowd: tuple[TestClient, list[str], Settings],
) -> None:
    client, ids, settings = crowd
    crawler = _h(settings, subject="dr-crawl", role="clinician", org="org-C")
    blocked_at = None
    for n, pid in enumerate(ids, start=1):
        r = client.get(f"/fhir/Patient/{pid}", headers=crawler)
        assert r.status_code == 403
        if "blocked" in r.json()["issue"][0]["diagnostics"]:
            blocked_at = n
            break
    assert blocked_at is not None
    assert blocked_at <= settings.exfil_patients_per_hour + 1
    # Blocked for everything now, even what it could see before (Organization data).
    r = client.get("/fhir/Organization", headers=crawler)
    assert r.status_code == 403
    # A fresh token of the same account is still blocked (the block is on the subject).
    again = _h(settings, subject="dr-crawl", role="clinician", org="org-C")
    assert client.get(f"/fhir/Patient/{ids[0]}", headers=again).status_code == 403
    # The auditor sees the alert and the block; lifting it restores the account.
    dpo = _h(settings, subject="dpo", role="auditor")
    queue = client.get("/audit/review-queue", headers=dpo).json()
    assert any(a["kind"] == "exfiltration-guard" and a["who"] == "dr-crawl"
               for a in queue["alerts"])
    assert [b["who"] for b in queue["blocked"]] == ["dr-crawl"]
    denials = client.get("/fhir/AuditEvent", params={"agent": "dr-crawl", "_count": 200},
                         headers=dpo).json()
    assert denials["total"] >= blocked_at
    assert all(e["resource"]["outcome"] == "4" for e in denials["entry"])
    r = client.post("/access/blocks/dr-crawl/clear", headers=dpo)
    assert r.status_code == 200
    assert client.get("/fhir/Organization", headers=crawler).status_code == 200
    # Clinicians cannot lift blocks.
    assert client.post("/access/blocks/dr-crawl/clear", headers=crawler).status_code == 403


def test_breaking_the_glass_for_everyone_is_also_stopped(
    crowd: tuple[TestClient, list[str], Settings],
) -> None:
    client, ids, settings = crowd
    doc = _h(settings, subject="dr-glass", role="clinician", org="org-C")
    reads = 0
    for pid in ids:
        r = client.post("/access/break-glass", json={"patient": pid,
                                                     "reason": "emergency, honestly"},
                        headers=doc)
        if r.status_code != 201:
            break
        r = client.get(f"/fhir/Patient/{pid}", headers=doc)
        if r.status_code != 200:
            assert "blocked" in r.json()["issue"][0]["diagnostics"]
            break
        reads += 1
    assert reads <= settings.exfil_patients_per_hour
    dpo = _h(settings, subject="dpo", role="auditor")
    queue = client.get("/audit/review-queue", headers=dpo).json()
    assert len(queue["emergency_grants"]) >= reads
    assert any(a["kind"] == "exfiltration-guard" for a in queue["alerts"])


def test_a_clinician_in_care_of_many_is_not_blocked_by_rereading(
    crowd: tuple[TestClient, list[str], Settings],
) -> None:
    """The guard counts distinct patients, not requests."""
    client, ids, settings = crowd
    doc = _h(settings, subject="dr-b", role="clinician", org="org-B")  # authoring org
    for _ in range(3):
        for pid in ids[:20]:
            assert client.get(f"/fhir/Patient/{pid}", headers=doc).status_code == 200


@pytest.mark.parametrize("how", ["search", "history"])
def test_patients_touched_again_still_count_towards_the_limit(
    crowd: tuple[TestClient, list[str], Settings], how: str,
) -> None:
    """A lookup of a patient already touched this hour skips the hour's count; a later new
    patient in the same request must still be counted against the full hour."""
    client, ids, settings = crowd
    limit = settings.exfil_patients_per_hour
    doc = _h(settings, subject="dr-b2", role="clinician", org="org-B")
    for pid in ids[:limit]:
        assert client.get(f"/fhir/Patient/{pid}", headers=doc).status_code == 200
    if how == "search":  # the first rows are patients touched already, then new ones
        r = client.get("/fhir/Patient", params={"_count": 100, "_sort": "_lastUpdated"},
                       headers=doc)
    else:  # a history page: rows not decided one by one
        r = client.get("/fhir/Patient/_history", params={"_count": 100}, headers=doc)
    assert r.status_code == 403, r.text
    assert "exfiltration guard" in r.json()["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Patient/{ids[0]}", headers=doc).status_code == 403
