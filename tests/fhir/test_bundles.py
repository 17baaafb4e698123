"""Transaction and batch Bundles, search wiring, $everything, $validate, JSON Patch."""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi.testclient import TestClient

from .conftest import make_observation, make_patient


def _txn(n_obs: int = 3, ident: str = "txn-1") -> dict[str, Any]:
    pat = make_patient()
    pat["identifier"].append({"system": "https://usmis.kz/sid/source/s1/patient", "value": ident})
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
            "resource": pat,
            "request": {"method": "POST", "url": "Patient",
                        "ifNoneExist": f"identifier=https://usmis.kz/sid/source/s1/patient|{ident}"},
        },
        {
            "fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222",
            "resource": {"resourceType": "Encounter", "status": "finished",
                         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "AMB"},
                         "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111",
                                     "display": "Testova Aigul"}},
            "request": {"method": "POST", "url": "Encounter"},
        },
    ]
    for i in range(n_obs):
        obs = make_observation("placeholder", value=60 + i)
        obs["subject"] = {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"}
        obs["encounter"] = {"reference": "urn:uuid:22222222-2222-2222-2222-222222222222"}
        entries.append({"resource": obs, "request": {"method": "POST", "url": "Observation"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_transaction_resolves_urn_uuid_and_is_conditional(client: TestClient) -> None:
    r = client.post("/fhir", json=_txn())
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    locs = [e["response"]["location"] for e in out["entry"]]
    pid = locs[0].split("/")[1]
    assert all(e["response"]["status"].startswith("201") for e in out["entry"])
    obs = client.get("/" + "fhir/" + "/".join(locs[2].split("/")[:2])).json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"
    assert obs["encounter"]["reference"].startswith("Encounter/")

    # the same bundle again: the Patient is matched, not duplicated
    r = client.post("/fhir", json=_txn())
    assert r.json()["entry"][0]["response"]["status"].startswith("200")
    assert r.json()["entry"][0]["response"]["location"].split("/")[1] == pid

    everything = client.get(f"/fhir/Patient/{pid}/$everything", params={"_count": 4}).json()
    assert everything["total"] == 1 + 2 + 6
    assert everything["entry"][0]["resource"]["resourceType"] == "Patient"
    assert len(everything["entry"]) == 4
    nxt = [link["url"] for link in everything["link"] if link["relation"] == "next"]
    seen = [e["resource"]["id"] for e in everything["entry"]]
    # resources written meanwhile shift no page (keyset paging): nothing repeats or is missed
    for _ in range(3):
        client.post("/fhir/Observation", json=make_observation(pid))
    while nxt:
        page = client.get(nxt[0].replace("http://testserver", "")).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
    assert len(seen) == len(set(seen))
    assert 9 <= len(seen) <= 12
    assert client.get(f"/fhir/Patient/{pid}/$everything", params={"_count": 50}
                      ).json()["total"] == 12
    r = client.get(f"/fhir/Patient/{pid}/$everything", params={"_cursor": "Nope/x"})
    assert r.status_code == 400


def test_transaction_is_all_or_nothing(client: TestClient) -> None:
    bundle = _txn(ident="txn-bad")
    bundle["entry"][3]["resource"]["status"] = 12
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 400
    exprs = [e for i in r.json()["issue"] for e in i.get("expression", [])]
    assert "Bundle.entry[3].resource.status" in exprs
    hist = client.get("/fhir/_history").json()
    assert hist["total"] == 0


def test_batch_reports_each_entry(client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": make_patient(), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "gender": 3},
             "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/nope"}},
        ],
    }
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0].startswith("201")
    assert statuses[1] == "400"
    assert statuses[2] == "404"


def test_search_through_the_store(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=make_patient(iin="850505400111")).json()["id"]
    for code in ("8867-4", "8867-4", "2708-6"):
        client.post("/fhir/Observation", json=make_observation(pid, code=code))
    r = client.get("/fhir/Patient", params={"identifier": "https://usmis.kz/sid/iin|850505400111"})
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 1
    r = client.get("/fhir/Observation",
                   params={"patient": pid, "code": "http://loinc.org|8867-4", "_count": 1})
    page = r.json()
    assert page["total"] == 2
    assert len(page["entry"]) == 1
    assert any(link["relation"] == "next" for link in page["link"])
    r = client.post("/fhir/Observation/_search", data={"patient": pid})
    assert r.json()["total"] == 3
    r = client.get("/fhir/Observation", params={"patient": pid, "_summary": "count"})
    assert r.json()["total"] == 3
    assert "entry" not in r.json()  # no empty arrays in R4 JSON


def test_json_patch_and_validate(client: TestClient) -> None:
    pat = client.post("/fhir/Patient", json=make_patient()).json()
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    r = client.patch(f"/fhir/Patient/{pat['id']}", content=json.dumps(ops),
                     headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "male"
    # well-formed patches that cannot apply, or would make it invalid: 422, naming why
    for bad, where in (([{"op": "replace", "path": "/gender", "value": 7}], "Patient.gender"),
                       ([{"op": "remove", "path": "/nothing/here"}], None),
                       ([{"op": "test", "path": "/gender", "value": "female"}], None),
                       ([{"op": "replace", "path": "/id", "value": "other"}], "Patient.id")):
        r = client.patch(f"/fhir/Patient/{pat['id']}", content=json.dumps(bad),
                         headers={"Content-Type": "application/json-patch+json"})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
        if where:
            assert r.json()["issue"][0]["expression"] == [where]
    r = client.patch(f"/fhir/Patient/{pat['id']}", content=json.dumps([{"path": "/x"}]),
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 400  # a malformed patch document
    assert client.get(f"/fhir/Patient/{pat['id']}").json()["meta"]["versionId"] == "2"
    r = client.patch(f"/fhir/Patient/{pat['id']}", content=json.dumps(ops),
                     headers={"Content-Type": "application/json"})
    assert r.status_code == 415

    r = client.post("/fhir/Observation/$validate", json={"resourceType": "Observation"})
    assert r.status_code == 200
    issues = r.json()["issue"]
    assert {i["expression"][0] for i in issues} == {"Observation.status", "Observation.code"}
    r = client.post("/fhir/Patient/$validate", json=make_patient())
    assert r.json()["issue"][0]["severity"] == "information"

    # a transaction PATCH entry carries a Binary with the JSON Patch
    data = base64.b64encode(json.dumps([{"op": "add", "path": "/active", "value": True}]).encode())
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                      "data": data.decode()},
         "request": {"method": "PATCH", "url": f"Patient/{pat['id']}"}}]}
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    assert client.get(f"/fhir/Patient/{pat['id']}").json()["active"] is True


def test_any_r4_type_is_stored_and_readable(client: TestClient) -> None:
    body = {"resourceType": "Substance", "code": {"text": "water"}}
    r = client.post("/fhir/Substance", json=body)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert client.get(f"/fhir/Substance/{sid}").json()["code"]["text"] == "water"
    r = client.get("/fhir/Substance", params={"_id": sid})
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 1


def test_history_levels_and_metadata(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=make_patient()).json()["id"]
    client.post("/fhir/Observation", json=make_observation(pid))
    assert client.get("/fhir/_history").json()["total"] == 2
    assert client.get("/fhir/Observation/_history").json()["total"] == 1
    meta = client.get("/fhir/metadata").json()
    types = {r["type"]: r for r in meta["rest"][0]["resource"]}
    assert "Observation" in types
    assert "AuditEvent" in types
    assert {i["code"] for i in types["AuditEvent"]["interaction"]} == {"read", "search-type"}
    assert not types["AuditEvent"]["updateCreate"]
    from usmis.audit.endpoints import SEARCH_PARAMS

    assert {p["name"] for p in types["AuditEvent"]["searchParam"]} == {
        n for n in SEARCH_PARAMS if not n.startswith("_")}
    obs_params = {p["name"] for p in types["Observation"]["searchParam"]}
    assert {"patient", "code", "_id", "_lastUpdated", "_tag", "_source"} <= obs_params
    assert "Observation:patient" in types["Observation"]["searchInclude"]


def test_conditional_creates_that_find_their_resources_answer_with_their_versions(
    client: TestClient,
) -> None:
    """Several conditional creates of a bundle that match answer 200 with each matched
    resource's current version (read together); one that matches a deleted resource
    creates a new one."""
    sys = "https://usmis.kz/sid/source/s1/patient"

    def entry(ident: str) -> dict[str, Any]:
        pat = make_patient()
        pat["identifier"].append({"system": sys, "value": ident})
        return {"resource": pat, "request": {"method": "POST", "url": "Patient",
                                              "ifNoneExist": f"identifier={sys}|{ident}"}}

    first = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                       "entry": [entry("m1"), entry("m2"), entry("m3")]})
    ids = [e["response"]["location"].split("/")[1] for e in first.json()["entry"]]
    updated = {**client.get(f"/fhir/Patient/{ids[1]}").json(), "active": False}
    assert client.put(f"/fhir/Patient/{ids[1]}", json=updated).status_code == 200
    assert client.delete(f"/fhir/Patient/{ids[2]}").status_code in (200, 204)
    again = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                       "entry": [entry("m1"), entry("m2"), entry("m3")]})
    assert again.status_code == 200, again.text
    out = [e["response"] for e in again.json()["entry"]]
    assert [r["status"][:3] for r in out] == ["200", "200", "201"]
    assert out[0]["location"] == f"Patient/{ids[0]}/_history/1"
    assert out[1]["location"] == f"Patient/{ids[1]}/_history/2"
    assert out[1]["etag"] == 'W/"2"'
    assert out[2]["location"].split("/")[1] != ids[2]


def test_criteria_matching_several_resources_fail_the_transaction_with_412(
    client: TestClient,
) -> None:
    for _ in range(2):  # two resources under one identifier (plain creates allow it)
        assert client.post("/fhir/Organization", json={
            "resourceType": "Organization", "name": "Twin",
            "identifier": [{"system": "urn:org", "value": "T1"}]}).status_code == 201
    new = {"resourceType": "Organization", "name": "Third",
           "identifier": [{"system": "urn:org", "value": "T1"}]}
    for request in ({"method": "POST", "url": "Organization",
                     "ifNoneExist": "identifier=urn:org|T1"},
                    {"method": "PUT", "url": "Organization?identifier=urn:org|T1"},
                    {"method": "DELETE", "url": "Organization?identifier=urn:org|T1"}):
        entry = {"request": request} | ({} if request["method"] == "DELETE"
                                        else {"resource": new})
        r = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                       "entry": [entry]})
        assert r.status_code == 412, (request, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Organization", params={"identifier": "urn:org|T1"}
                      ).json()["total"] == 2
