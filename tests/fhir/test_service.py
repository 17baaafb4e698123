"""The in-process service API (ingest, MPI, oversight call it inside their transaction)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from usmis.fhir import repository as repo
from usmis.fhir.context import SystemAccess
from usmis.fhir.service import FhirService
from usmis.kit.crypto import Keyring
from usmis.kit.db import unit_of_work
from usmis.kit.errors import Gone, NotFound, PreconditionFailed

from .conftest import make_observation, make_patient

SRC = "https://usmis.kz/sid/source/his-1/patient"


def _with_source_id(value: str) -> dict[str, Any]:
    p = make_patient()
    p["identifier"].append({"system": SRC, "value": value})
    return p


def test_service_create_update_read_iterate(engine: Any, keys: Keyring) -> None:
    with unit_of_work(engine, write=True) as conn:
        svc = FhirService(conn, keys)
        p = svc.create(_with_source_id("a1"), if_none_exist=f"identifier={SRC}|a1")
        again = svc.create(_with_source_id("a1"), if_none_exist=f"identifier={SRC}|a1")
        assert p.created
        assert not again.created
        assert again.resource["id"] == p.resource["id"]
        pid = p.resource["id"]
        svc.create(make_observation(pid))
    with unit_of_work(engine, write=True) as conn:
        svc = FhirService(conn, keys)
        # conditional update: matches the existing one by the source identifier
        body = {**_with_source_id("a1"), "active": True}
        r = svc.conditional_update("Patient", f"identifier={SRC}|a1", body)
        assert r.resource["id"] == pid
        assert r.version_id == 2
        # conditional update that matches nothing creates
        r2 = svc.conditional_update("Patient", f"identifier={SRC}|b2", _with_source_id("b2"))
        assert r2.created
        with pytest.raises(PreconditionFailed):
            svc.update("Patient", pid, {**body, "id": pid}, if_match='W/"1"')
    with unit_of_work(engine, write=False) as conn:
        svc = FhirService(conn, keys)
        assert svc.read("Patient", pid)["active"] is True
        assert "active" not in svc.vread("Patient", pid, 1)
        assert {p["id"] for p in svc.iter_resources("Patient", batch=1)} == {
            pid, r2.resource["id"]}
        assert len(list(svc.iter_resources("Observation"))) == 1
    with unit_of_work(engine, write=True) as conn:
        svc = FhirService(conn, keys)
        svc.delete("Patient", r2.resource["id"])
        with pytest.raises(Gone):
            svc.read("Patient", r2.resource["id"])
        with pytest.raises(NotFound):
            svc.read("Patient", "never")


def test_compartment_column_and_everything_filters(client: TestClient, engine: Any) -> None:
    pid = client.post("/fhir/Patient", json=make_patient()).json()["id"]
    client.post("/fhir/Observation", json=make_observation(pid))
    enc = {"resourceType": "Encounter", "status": "finished",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
           "subject": {"reference": f"Patient/{pid}"}}
    client.post("/fhir/Encounter", json=enc)
    r = client.get(f"/fhir/Patient/{pid}/$everything", params={"_type": "Observation"})
    assert [e["resource"]["resourceType"] for e in r.json()["entry"]] == ["Observation"]
    r = client.get(f"/fhir/Patient/{pid}/$everything", params={"_since": "2099-01-01"})
    assert r.json()["total"] == 0
    assert client.get("/fhir/Patient/nope/$everything").status_code == 404


def test_transaction_conditional_reference_and_put(client: TestClient) -> None:
    client.post("/fhir/Patient", json=_with_source_id("c3"))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**make_observation("x"),
                      "subject": {"reference": f"Patient?identifier={SRC}|c3"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {**_with_source_id("c3"), "gender": "male"},
         "request": {"method": "PUT", "url": f"Patient?identifier={SRC}|c3"}},
    ]}
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    obs_loc = r.json()["entry"][0]["response"]["location"]
    pat_loc = r.json()["entry"][1]["response"]["location"]
    assert pat_loc.endswith("/_history/2")
    obs = client.get("/fhir/" + "/".join(obs_loc.split("/")[:2])).json()
    assert obs["subject"]["reference"] == "Patient/" + pat_loc.split("/")[1]
    # a conditional reference that matches nothing fails the whole transaction
    bundle["entry"][0]["resource"]["subject"]["reference"] = f"Patient?identifier={SRC}|none"
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 400
    assert "Bundle.entry[0]" in r.json()["issue"][0]["expression"][0]


def test_history_since_and_paging(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=make_patient()).json()["id"]
    for i in range(4):
        body = client.get(f"/fhir/Patient/{pid}").json()
        body["gender"] = ["male", "female"][i % 2]
        client.put(f"/fhir/Patient/{pid}", json=body)
    page = client.get(f"/fhir/Patient/{pid}/_history", params={"_count": 2}).json()
    assert page["total"] == 5
    assert [e["resource"]["meta"]["versionId"] for e in page["entry"]] == ["5", "4"]
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    body = client.get(f"/fhir/Patient/{pid}").json()
    body["active"] = True
    assert client.put(f"/fhir/Patient/{pid}", json=body).status_code == 200  # version 6
    # the next page is still the list the first page began (pinned by its _at)
    page2 = client.get(nxt.replace("http://testserver", "")).json()
    assert page2["total"] == 5
    assert [e["resource"]["meta"]["versionId"] for e in page2["entry"]] == ["3", "2"]
    fresh = client.get(f"/fhir/Patient/{pid}/_history", params={"_count": 2}).json()
    assert [e["resource"]["meta"]["versionId"] for e in fresh["entry"]] == ["6", "5"]
    assert client.get("/fhir/_history", params={"_since": "2099-01-01T00:00:00Z"}).json()[
        "total"] == 0
    assert client.get("/fhir/_history", params={"_since": "yesterday"}).status_code == 400


def test_the_same_content_from_another_source_is_a_new_version(engine: Any, keys: Keyring
                                                             ) -> None:
    """No-op updates are per writer: the row records which source wrote the version."""
    with unit_of_work(engine, write=True) as conn:
        first = FhirService(conn, keys, SystemAccess(source_id="s1"))
        pid = first.create(make_patient()).resource["id"]
        same = first.read("Patient", pid)
        assert first.update("Patient", pid, same).version_id == 1
        assert first.unchanged == {("Patient", pid)}
        other = FhirService(conn, keys, SystemAccess(source_id="s2"))
        assert other.update("Patient", pid, same).version_id == 2
        assert other.unchanged == set()
        row = repo.get_current(conn, "Patient", pid)
        assert row is not None
        assert row.source_id == "s2"
