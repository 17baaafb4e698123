"""The index over HTTP: $match (PDQm), $ihe-pix (PIXm), the review queue, relink."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient

from usmis.access.tokens import issue_token
from usmis.app import create_app
from usmis.audit import repository as audit_repo
from usmis.audit import service as audit_service
from usmis.config import Settings
from usmis.kit.db import make_engine, transaction
from usmis.mpi import service
from usmis.mpi.lookup import MATCH_GRADE_URL
from usmis.mpi.relink import relink

from .factories import make_iin

IIN = make_iin(date(1985, 3, 14), "F")
SRC = "https://usmis.kz/sid/source/{}/patient"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    token = issue_token(settings, subject="test-admin", role="admin")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def _patient(source: str, local: str, **kw: Any) -> dict[str, Any]:
    ids = [{"system": SRC.format(source), "value": local}]
    if kw.get("iin", IIN):
        ids.append({"system": "https://usmis.kz/sid/iin", "value": kw.get("iin", IIN)})
    return {
        "resourceType": "Patient",
        "identifier": ids,
        "name": [{"family": kw.get("family", "Нұрланова"), "given": kw.get("given", ["Жанна"])}],
        "gender": "female",
        "birthDate": kw.get("birth", "1985-03-14"),
    }


def _store(client: TestClient, settings: Settings, res: dict[str, Any]) -> str:
    r = client.post("/fhir/Patient", json=res)
    assert r.status_code == 201, r.text
    pid = str(r.json()["id"])
    engine = make_engine(settings.resolved_database_url)
    with transaction(engine) as conn:
        service.link_source_patient(conn, settings, pid)
    engine.dispose()
    return pid


def test_match_returns_graded_candidates(client: TestClient, settings: Settings) -> None:
    pid = _store(client, settings, _patient("register", "1"))
    query = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": _patient("x", "0", iin=None, family="Nurlanova",
                                                      given=["Zhanna"])},
            {"name": "count", "valueInteger": 5},
        ],
    }  # fmt: skip
    r = client.post("/fhir/Patient/$match", json=query)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset"
    entry = bundle["entry"][0]
    assert entry["resource"]["id"] == pid
    assert entry["search"]["mode"] == "match"
    assert 0 < entry["search"]["score"] <= 1
    assert entry["search"]["extension"][0]["url"] == MATCH_GRADE_URL
    assert entry["search"]["extension"][0]["valueCode"] in {"certain", "probable", "possible"}


def test_match_rejects_bad_input_with_an_outcome(client: TestClient) -> None:
    r = client.post("/fhir/Patient/$match", json={"resourceType": "Patient"})
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    r = client.post("/fhir/Patient/$match", content=b"{not json")
    assert r.status_code == 400


def test_pix_lists_identifiers_of_the_same_person(client: TestClient, settings: Settings) -> None:
    a = _store(client, settings, _patient("register", "1"))
    b = _store(client, settings, _patient("his", "77", iin=None, given=["Zhanna"],
                                          family="Nurlanova"))  # fmt: skip
    r = client.get(
        "/fhir/Patient/$ihe-pix", params={"sourceIdentifier": f"{SRC.format('register')}|1"}
    )
    assert r.status_code == 200, r.text
    params = r.json()["parameter"]
    refs = {p["valueReference"]["reference"] for p in params if p["name"] == "targetId"}
    assert refs == {f"Patient/{a}", f"Patient/{b}"}
    idents = {
        (p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
        for p in params
        if p["name"] == "targetIdentifier"
    }
    assert (SRC.format("his"), "77") in idents
    r = client.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": "nope"})
    assert r.status_code == 400


def test_review_queue_and_operations_over_http(client: TestClient, settings: Settings) -> None:
    a = _store(client, settings, _patient("register", "1"))
    b = _store(client, settings, _patient("his", "2", iin=None, birth="1985-03-17"))
    r = client.get("/mpi/review")
    assert r.status_code == 200
    items = r.json()["items"]
    if items:
        d = client.post(f"/mpi/review/{items[0]['id']}",
                        json={"decision": "not-link", "reason": "different people"})  # fmt: skip
        assert d.status_code == 200, d.text
    engine = make_engine(settings.resolved_database_url)
    with transaction(engine) as conn:
        pa, pb = service.person_of(conn, a), service.person_of(conn, b)
    engine.dispose()
    if pa != pb:
        r = client.post("/mpi/merge", json={"from_person": pb, "into_person": pa, "reason": "id"})
        assert r.status_code == 200, r.text
        op = r.json()["operation_id"]
        r = client.post("/mpi/revert", json={"operation_id": op, "reason": "mistake"})
        assert r.status_code == 200, r.text
    r = client.get(f"/mpi/persons/{pa}")
    assert r.status_code == 200
    assert a in r.json()["patients"]
    r = client.post("/mpi/unlink", json={"patient_id": a, "reason": ""})
    assert r.status_code == 400  # a reason is required
    assert client.get("/mpi/stats").json()["source_records"] == 2


def test_registrar_api_needs_a_registrar(client: TestClient, settings: Settings) -> None:
    token = issue_token(settings, subject="doc", role="clinician", org="org1")
    r = client.get("/mpi/review", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert client.get("/mpi/review", headers={"Authorization": ""}).status_code == 401


def test_relink_reclusters_and_reports(client: TestClient, settings: Settings) -> None:
    people = [("Нұрланова", "Жанна"), ("Nurlanova", "Zhanna"), ("Ахметов", "Ерлан"),
              ("Akhmetov", "Yerlan")]  # fmt: skip
    for i, (fam, giv) in enumerate(people):
        birth = "1985-03-14" if i < 2 else "1970-01-02"
        res = _patient(f"s{i}", str(i), iin=None, family=fam, given=[giv], birth=birth)
        _store(client, settings, res)
    engine = make_engine(settings.resolved_database_url)
    with transaction(engine) as conn:
        summary = relink(conn, settings)
        again = relink(conn, settings)
    engine.dispose()
    assert summary.records == 4
    assert summary.persons_after == 2
    assert again.records_moved == 0


def test_registrar_operations_are_in_the_audit_chain(
    client: TestClient, settings: Settings
) -> None:
    a = _store(client, settings, _patient("register", "1"))
    b = _store(client, settings, _patient("his", "9", iin=None, family="Ахметов",
                                          given=["Ерлан"], birth="1970-01-01"))
    engine = make_engine(settings.resolved_database_url)
    with transaction(engine) as conn:
        pa, pb = service.person_of(conn, a), service.person_of(conn, b)
    assert pa is not None
    assert pb is not None
    assert pa != pb
    r = client.post("/mpi/merge", json={"from_person": pb, "into_person": pa,
                                        "reason": "the same woman, per her passport"})
    assert r.status_code == 200, r.text
    assert client.get(f"/mpi/persons/{pa}").status_code == 200
    with transaction(engine) as conn:
        entries = [e.content for e in audit_repo.iter_entries(conn)]
        report = audit_service.verify(conn, settings)
    engine.dispose()
    mpi = [e for e in entries if '"mpi"' in (e.get("detail") or "")]
    ops = [json.loads(e["detail"])["mpi"]["operation"] for e in mpi]
    assert ops == ["merge", "person"]
    merge = mpi[0]
    assert (merge["action"], merge["subject"]) == ("update", "test-admin")
    assert {pa, pb} <= set(json.loads(merge["persons"]))
    assert "passport" not in json.dumps(entries)  # the free-text reason stays out
    assert a in json.loads(mpi[1]["patients"])
    assert report.ok, report.message
    auditor = issue_token(settings, subject="dpo", role="auditor")
    r = client.get("/fhir/AuditEvent", params={"_count": 50},
                   headers={"Authorization": f"Bearer {auditor}"})
    assert r.status_code == 200, r.text
    assert r.json()["total"] >= 2
