"""End to end: search through STORE's REST API (TestClient) and a real client (fhirpy)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from ..conftest import LiveServer, make_observation, make_patient


def _post(client: TestClient, res: dict[str, Any]) -> str:
    r = client.post(f"/fhir/{res['resourceType']}", json=res)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _world(client: TestClient) -> tuple[str, str]:
    p1 = _post(client, make_patient(iin="900512300123", family="Иванова", phone="+77011234567"))
    p2 = _post(client, make_patient(iin="850202400456", family="Müller", phone="+77019990000"))
    for i in range(7):
        _post(client, make_observation(p1, code="8867-4" if i % 2 else "2708-6", value=60 + i))
    _post(client, make_observation(p2, code="8867-4", value=90))
    return p1, p2


def test_search_paging_includes_chains_over_http(client: TestClient) -> None:
    p1, p2 = _world(client)
    # paging: follow next links to the end, every match once
    seen: list[str] = []
    r = client.get(
        "/fhir/Observation", params={"patient": p1, "_count": 3, "_sort": "-value-quantity"}
    )
    while True:
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["total"] == 7
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        r = client.get(nxt[0].split("/fhir", 1)[1].join(["/fhir", ""]))
    assert len(seen) == 7
    assert len(set(seen)) == 7
    # blind identity searches
    r = client.get("/fhir/Patient", params={"name": "иванова"}).json()
    assert [e["resource"]["id"] for e in r["entry"]] == [p1]
    r = client.get("/fhir/Patient", params={"phone": "+7 701 999 00 00"}).json()
    assert [e["resource"]["id"] for e in r["entry"]] == [p2]
    # chain and _has
    r = client.get("/fhir/Observation", params={"patient.identifier": "850202400456"}).json()
    assert r["total"] == 1
    r = client.get("/fhir/Patient", params={"_has:Observation:patient:code": "2708-6"}).json()
    assert [e["resource"]["id"] for e in r["entry"]] == [p1]
    # _include: the patient comes back once, as an include
    r = client.get(
        "/fhir/Observation", params={"patient": p2, "_include": "Observation:patient"}
    ).json()
    modes = sorted((e["search"]["mode"], e["resource"]["resourceType"]) for e in r["entry"])
    assert modes == [("include", "Patient"), ("match", "Observation")]
    # POST search = GET search
    r = client.post("/fhir/Patient/_search", data={"identifier": "900512300123"}).json()
    assert r["total"] == 1


def test_bad_search_is_a_400_operation_outcome(client: TestClient) -> None:
    _world(client)
    strict = {"Prefer": "handling=strict"}
    for params in ({"name:contains": "Secret"}, {"date": "yesterday"}, {"_sort": "name"},
                   {"birthdate": "ap1990-01-01"}, {"colour": "blue"}):  # fmt: skip
        r = client.get("/fhir/Patient", params=params, headers=strict)
        assert r.status_code == 400, params
        oo = r.json()
        assert oo["resourceType"] == "OperationOutcome"
        assert "Secret" not in r.text
    r = client.get("/fhir/Patient", params={"colour": "blue"}, headers=strict)
    assert "colour" in r.text
    # lenient (STORE's default): unknown parameters are ignored with a warning outcome
    r = client.get(
        "/fhir/Patient", params={"colour": "blue"}, headers={"Prefer": "handling=lenient"}
    )
    assert r.status_code == 200
    assert r.json()["total"] == 2
    assert any(e["search"]["mode"] == "outcome" for e in r.json()["entry"])


def test_fhirpy_searches_and_pages(live_server: LiveServer) -> None:
    from fhirpy import SyncFHIRClient

    fc = SyncFHIRClient(f"{live_server.url}/fhir", authorization=f"Bearer {live_server.token}")
    pat = fc.resource("Patient", **make_patient(iin="770707300999", family="Kim"))
    pat.save()
    for i in range(5):
        fc.resource("Observation", **make_observation(pat.id, value=50 + i)).save()
    found = fc.resources("Patient").search(identifier="https://usmis.kz/sid/iin|770707300999")
    assert [p.id for p in found.fetch()] == [pat.id]
    obs = fc.resources("Observation").search(patient=pat.id).limit(2).fetch_all()
    assert len(obs) == 5
    assert (
        fc.resources("Observation").search(patient=pat.id, **{"value-quantity": "gt52"}).count()
        == 2
    )
