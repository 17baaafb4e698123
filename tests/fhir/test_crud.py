"""CRUD, versioning, ETags, Prefer, history over the real app on both backends."""

from __future__ import annotations

from fastapi.testclient import TestClient

from .conftest import make_observation, make_patient

FHIR = {"Content-Type": "application/fhir+json"}


def test_create_read_update_delete_with_history(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json=make_patient())
    assert r.status_code == 201, r.text
    pat = r.json()
    pid = pat["id"]
    assert len(pid) == 36  # random uuid, never derived from the IIN
    assert pat["meta"]["versionId"] == "1"
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"].endswith(f"/fhir/Patient/{pid}/_history/1")

    r = client.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 200
    assert r.json()["name"][0]["family"] == "Testova"
    assert r.headers["content-type"].startswith("application/fhir+json")

    pat["active"] = True
    r = client.put(f"/fhir/Patient/{pid}", json=pat, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["versionId"] == "2"

    # stale If-Match: 412
    r = client.put(f"/fhir/Patient/{pid}", json=pat, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert r.json()["resourceType"] == "OperationOutcome"

    r = client.get(f"/fhir/Patient/{pid}/_history/1")
    assert r.status_code == 200
    assert "active" not in r.json()

    # a delete If-Match a stale version: 412, nothing deleted; the current one: deleted
    r = client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    r = client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": 'W/"2"'})
    assert r.status_code == 204
    r = client.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 410
    assert r.json()["issue"][0]["code"] == "deleted"

    r = client.get(f"/fhir/Patient/{pid}/_history")
    assert r.status_code == 200
    hist = r.json()
    assert hist["type"] == "history"
    assert hist["total"] == 3
    methods = [e["request"]["method"] for e in hist["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]


def test_errors_are_operation_outcomes(client: TestClient) -> None:
    r = client.get("/fhir/Patient/does-not-exist")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"
    r = client.get("/fhir/NotAType/1")
    assert r.status_code == 404
    r = client.post("/fhir/Patient", content=b"{not json", headers=FHIR)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    bad = make_observation("x")
    bad["status"] = 5
    bad["valueString"] = "also"
    r = client.post("/fhir/Observation", json=bad)
    assert r.status_code == 400
    exprs = [e for i in r.json()["issue"] for e in i.get("expression", [])]
    assert "Observation.status" in exprs
    assert "Observation.valueString" in exprs
    r = client.post("/fhir/AuditEvent", json={"resourceType": "AuditEvent"})
    assert r.status_code in (400, 405)


def test_prefer_header(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json=make_patient(), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201
    assert r.content == b""
    assert "Location" in r.headers
    r = client.post(
        "/fhir/Patient", json=make_patient(), headers={"Prefer": "return=OperationOutcome"}
    )
    assert r.json()["resourceType"] == "OperationOutcome"


def test_auth_required_except_metadata(client: TestClient) -> None:
    anon = TestClient(client.app, raise_server_exceptions=False)
    r = anon.get("/fhir/Patient/x")
    assert r.status_code == 401
    assert r.json()["resourceType"] == "OperationOutcome"
    r = anon.get("/fhir/metadata")
    assert r.status_code == 200
    assert r.json()["fhirVersion"] == "4.0.1"
    assert anon.get("/health").status_code == 200
    assert anon.get("/ready").status_code == 200


def test_an_update_that_changes_nothing_makes_no_version(client: TestClient) -> None:
    """A PUT of the content already stored (meta's versionId/lastUpdated aside, keys in any
    order) answers 200 with the current version and writes no new one; a change does."""
    pat = client.post("/fhir/Patient", json=make_patient()).json()
    pid = pat["id"]
    reordered = dict(reversed(list(pat.items())))
    reordered["meta"] = {"versionId": "7", "lastUpdated": "2001-01-01T00:00:00Z"}
    r = client.put(f"/fhir/Patient/{pid}", json=reordered, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == 'W/"1"'
    assert r.json()["meta"] == pat["meta"]
    assert client.get(f"/fhir/Patient/{pid}/_history").json()["total"] == 1
    r = client.get(f"/fhir/Patient?identifier={pat['identifier'][0]['system']}|"
                   f"{pat['identifier'][0]['value']}")
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [pid]  # index rows kept
    r = client.put(f"/fhir/Patient/{pid}", json={**pat, "meta": {"tag": [
        {"system": "urn:t", "code": "x"}]}})
    assert r.json()["meta"]["versionId"] == "2"  # a new tag is a change
    r = client.put(f"/fhir/Patient/{pid}", json={**pat, "gender": "other"})
    assert r.json()["meta"]["versionId"] == "3"
    assert client.get(f"/fhir/Patient/{pid}/_history").json()["total"] == 3


def test_conditional_update_and_delete_over_http(client: TestClient) -> None:
    """PUT/DELETE Type?criteria: none matched creates / does nothing, one is updated /
    deleted, several are a 412."""
    q = "identifier=urn:lic|L-1"
    org = {"resourceType": "Organization", "name": "First",
           "identifier": [{"system": "urn:lic", "value": "L-1"}]}
    r = client.put(f"/fhir/Organization?{q}", json=org)
    assert r.status_code == 201, r.text
    oid = r.json()["id"]
    r = client.put(f"/fhir/Organization?{q}", json={**org, "name": "Renamed"})
    assert r.status_code == 200
    assert (r.json()["id"], r.json()["name"], r.json()["meta"]["versionId"]) == (
        oid, "Renamed", "2")
    assert client.delete("/fhir/Organization?identifier=urn:lic|NONE").status_code == 204
    assert client.get(f"/fhir/Organization/{oid}").status_code == 200
    client.post("/fhir/Organization", json={**org, "name": "Twin"})
    assert client.put(f"/fhir/Organization?{q}", json=org).status_code == 412
    assert client.delete(f"/fhir/Organization?{q}").status_code == 412
    client.delete(f"/fhir/Organization/{oid}")
    assert client.delete(f"/fhir/Organization?{q}").status_code == 204  # the twin, alone now
    assert client.get("/fhir/Organization", params={"identifier": "urn:lic|L-1"}
                      ).json()["total"] == 0
