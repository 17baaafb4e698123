"""The FHIR REST channel (/ingest/fhir) over real HTTP (FastAPI TestClient)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from usmis.access.tokens import issue_token
from usmis.config import Settings
from usmis.ingest import inbox, sources
from usmis.ingest import tables as t
from usmis.ingest.endpoints import router
from usmis.ingest.model import Incoming
from usmis.ingest.pipeline import Pipeline
from usmis.ingest.service import rest_server
from usmis.kit.db import transaction

from .test_pipeline import _count, _resources


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    from usmis.app import create_app

    app: FastAPI = create_app(settings)
    app.state.engine = engine
    if not any(getattr(r, "path", "") == "/ingest/fhir" for r in app.routes):
        app.include_router(router)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def token(engine: Engine) -> str:
    with transaction(engine) as conn:
        creds = sources.add_source(conn, source_id="ehr-test", name="Test EHR",
                                   kind="polyclinic", channels=["rest"], formats=["fhir"])
    assert creds.token
    return creds.token


def _batch() -> dict[str, Any]:
    sid = "https://usmis.kz/sid/source/ehr-test"
    return {
        "resourceType": "Bundle", "type": "batch", "id": "B1",
        "timestamp": "2024-04-15T11:52:00+05:00",
        "entry": [
            {"resource": {"resourceType": "Patient",
                          "identifier": [{"system": f"{sid}/patient", "value": "p1"}],
                          "gender": "female", "birthDate": "1984-06-04"},
             "request": {"method": "PUT", "url": f"Patient?identifier={sid}/patient|p1"}},
            {"resource": {"resourceType": "Encounter",
                          "identifier": [{"system": f"{sid}/encounter", "value": "e1"}],
                          "status": "finished",
                          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                    "code": "AMB"},
                          "subject": {"type": "Patient", "identifier": {
                              "system": f"{sid}/patient", "value": "p1"}}},
             "request": {"method": "PUT", "url": f"Encounter?identifier={sid}/encounter|e1"}},
        ],
    }


def test_source_posts_a_bundle_and_it_is_stored_as_its_own(
    client: TestClient, token: str, engine: Engine, settings: Settings
) -> None:
    r = client.post("/ingest/fhir", content=orjson.dumps(_batch()),
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 202, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert Pipeline(settings, engine).drain().done == 1
    (patient,) = _resources(engine, settings, "Patient")
    (enc,) = _resources(engine, settings, "Encounter")
    # the logical reference was resolved: the Encounter is in the Patient's compartment
    assert enc["subject"]["reference"] == f"Patient/{patient['id']}"
    assert patient["meta"]["source"] == "https://usmis.kz/source/ehr-test"
    # the same bundle again: deduplicated by the inbox
    client.post("/ingest/fhir", content=orjson.dumps(_batch()),
                headers={"Authorization": f"Bearer {token}"})
    Pipeline(settings, engine).drain()
    assert _count(engine, "Encounter") == 1


def test_bad_or_missing_credentials_are_refused(
    client: TestClient, token: str, engine: Engine
) -> None:
    body = orjson.dumps(_batch())
    assert client.post("/ingest/fhir", content=body).status_code == 401
    bad = token[:-3] + "xyz"
    assert client.post("/ingest/fhir", content=body,
                       headers={"Authorization": f"Bearer {bad}"}).status_code == 401
    with transaction(engine) as conn:
        sources.set_enabled(conn, "ehr-test", False)
    r = client.post("/ingest/fhir", content=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    with engine.connect() as c:
        assert c.execute(select(t.inbox)).first() is None


def test_a_source_cannot_write_into_another_sources_namespace(
    client: TestClient, token: str, engine: Engine
) -> None:
    b = _batch()
    b["entry"][0]["resource"]["identifier"][0]["system"] = "https://usmis.kz/sid/source/x/patient"
    r = client.post("/ingest/fhir", content=orjson.dumps(b),
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 400
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[0].resource.identifier"]


def test_malformed_json_is_a_dead_letter_with_an_operation_outcome(
    client: TestClient, token: str, engine: Engine, settings: Settings
) -> None:
    r = client.post("/ingest/fhir", content=orjson.dumps(_batch())[:100],
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["diagnostics"].startswith("json")
    with engine.connect() as c:
        dl = c.execute(select(t.dead_letter)).one()._mapping
    assert (dl["rule"], dl["source_id"]) == ("json", "ehr-test")


def test_invalid_resource_is_dead_lettered_with_the_element_path(
    client: TestClient, token: str, engine: Engine, settings: Settings
) -> None:
    b = _batch()
    del b["entry"][1]["resource"]["status"]
    client.post("/ingest/fhir", content=orjson.dumps(b),
                headers={"Authorization": f"Bearer {token}"})
    result = Pipeline(settings, engine).drain()
    assert result.dead == 1
    with engine.connect() as c:
        dl = c.execute(select(t.dead_letter)).one()._mapping
    assert dl["rule"].startswith("fhir-")
    assert "Encounter" in dl["field"] or "entry[1]" in dl["field"]
    assert _count(engine, "Patient") == 0  # a bundle is stored whole or not at all


def test_one_bundle_failing_to_store_costs_only_itself(
    client: TestClient, token: str, engine: Engine, settings: Settings
) -> None:
    """The batch first runs without a savepoint per message; the bad bundle makes it run
    again message by message, so the good ones around it are stored once."""
    payloads = []
    for n in range(3):
        b = orjson.loads(orjson.dumps(_batch()).replace(b"p1", f"p{n}".encode())
                         .replace(b"e1", f"e{n}".encode()))
        if n == 1:
            del b["entry"][1]["resource"]["status"]
        payloads.append(b)
    for b in payloads:
        r = client.post("/ingest/fhir", content=orjson.dumps(b),
                        headers={"Authorization": f"Bearer {token}"})
        assert r.status_code < 300, r.text
    result = Pipeline(settings, engine).drain()
    assert (result.claimed, result.done, result.dead) == (3, 2, 1)
    with engine.connect() as c:
        (dl,) = c.execute(select(t.dead_letter)).all()
    assert dl._mapping["rule"].startswith("fhir-")
    assert _count(engine, "Patient") == 2
    assert _count(engine, "Encounter") == 2
    assert _count(engine, "Provenance") == 2


def _numbered(n: int) -> bytes:
    return orjson.dumps(_batch()).replace(b"p1", f"p{n}".encode()).replace(
        b"e1", f"e{n}".encode()).replace(b'"B1"', f'"B{n}"'.encode())


def test_an_ndjson_body_is_one_inbox_message_a_line_and_a_bad_line_costs_only_itself(
    client: TestClient, token: str, engine: Engine, settings: Settings
) -> None:
    lines = [_numbered(0), b"{not json", _numbered(2), b"  ", _numbered(3)]
    r = client.post("/ingest/fhir", content=b"\n".join(lines) + b"\n",
                    headers={"Authorization": f"Bearer {token}",
                             "Content-Type": "application/fhir+ndjson"})
    assert r.status_code == 202, r.text
    info, error = r.json()["issue"]
    assert info["diagnostics"].startswith("accepted into the inbox: 3 message(s)")
    # the blank line is not a payload: the bad one is the second line
    assert (error["severity"], error["expression"]) == ("error", ["body"])
    assert error["diagnostics"].startswith("line 2: json:")
    with engine.connect() as c:
        rows = c.execute(select(t.inbox.c.message_id, t.inbox.c.status)
                         .order_by(t.inbox.c.id)).all()
        (dl,) = c.execute(select(t.dead_letter)).all()
    assert [tuple(x) for x in rows] == [("B0", "pending"), ("rest#2", "dead"),
                                        ("B2", "pending"), ("B3", "pending")]
    assert dl._mapping["rule"] == "json"
    assert Pipeline(settings, engine).drain().done == 3
    assert _count(engine, "Encounter") == 3
    # every line rejected: nothing accepted, so the answer is 400
    r = client.post("/ingest/fhir", content=b'[]\n{"resourceType": 1}',
                    headers={"Authorization": f"Bearer {token}",
                             "Content-Type": "application/x-ndjson"})
    assert r.status_code == 400
    assert [i["diagnostics"].split(":")[0] for i in r.json()["issue"]] == ["line 1", "line 2"]
    # an empty body is a clear error, not an empty success
    r = client.post("/ingest/fhir", content=b"\n\n", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+ndjson"})
    assert r.status_code == 400


def test_admin_api_needs_a_token(client: TestClient) -> None:
    assert client.get("/ingest/sources").status_code == 401
    assert client.get("/ingest/deadletters").status_code == 401


def test_admin_api_manages_sources_reports_and_dead_letters(
    client: TestClient, token: str, settings: Settings, engine: Engine
) -> None:
    from usmis.access.tokens import issue_token

    admin = {"Authorization": f"Bearer {issue_token(settings, subject='ops', role='admin')}"}
    r = client.post("/ingest/sources", headers=admin, json={
        "id": "lab-api", "name": "Lab via API", "kind": "lab", "channels": ["mllp"],
        "formats": ["hl7v2"], "mllp_peers": ["10.0.0.0/8"]})
    assert r.status_code == 201, r.text
    listed = {s["id"]: s for s in client.get("/ingest/sources", headers=admin).json()}
    assert listed["lab-api"]["mllp_peers"] == ["10.0.0.0/8"]
    assert "token_hash" not in listed["ehr-test"]  # credentials never listed
    assert client.post("/ingest/sources/lab-api/disable", headers=admin).status_code == 200
    assert client.get("/ingest/sources/lab-api", headers=admin).json()["enabled"] is False
    # a dead letter, seen through the API, fixed and replayed
    bad = _batch()
    bad["entry"][1]["resource"]["status"] = 42
    client.post("/ingest/fhir", content=orjson.dumps(bad),
                headers={"Authorization": f"Bearer {token}"})
    Pipeline(settings, engine).drain()
    (dl,) = client.get("/ingest/deadletters?source=ehr-test", headers=admin).json()
    shown = client.get(f"/ingest/deadletters/{dl['id']}", headers=admin).json()
    assert '"status":42' in shown["content"]
    fixed = shown["content"].replace('"status":42', '"status":"finished"')
    r = client.post(f"/ingest/deadletters/{dl['id']}/replay", headers=admin,
                    content=fixed.encode())
    assert r.status_code == 202
    assert Pipeline(settings, engine).drain().done == 1
    report = client.get("/ingest/report", headers=admin).json()
    assert report["ehr-test"]["by_status"] == {"done": 1}
    assert report["ehr-test"]["messages"] == 1
    # a non-admin token is refused
    src = {"Authorization": "Bearer " + issue_token(settings, subject="s", role="source",
                                                     source="ehr-test")}
    assert client.get("/ingest/sources", headers=src).status_code == 403


def test_a_post_waiting_for_the_database_does_not_hold_up_the_server(
    token: str, engine: Engine, settings: Settings
) -> None:
    """The channel's database work runs off the event loop: while one post waits for a row
    lock, the same server (real uvicorn) still answers other requests."""
    raw = orjson.dumps(_batch())
    admin = {"Authorization": f"Bearer {issue_token(settings, subject='t', role='admin')}"}
    with rest_server(settings, engine) as url, engine.connect() as holder, \
            ThreadPoolExecutor(1) as pool:
        held = holder.begin()
        # The same content, uncommitted: the post's insert must wait for this row.
        inbox.receive(holder, settings, Incoming(source_id="ehr-test", channel="rest",
                                                 format="fhir", message_id="held", raw=raw))
        first = pool.submit(httpx.post, f"{url}/ingest/fhir", content=raw, timeout=60,
                            headers={"Authorization": f"Bearer {token}"})
        time.sleep(0.5)
        assert not first.done()
        other = httpx.get(f"{url}/ingest/sources", headers=admin, timeout=10)
        assert other.status_code == 200
        assert not first.done()  # still waiting, and the server answered meanwhile
        held.commit()
        assert first.result(timeout=60).status_code == 202  # a duplicate of the held one
    with engine.connect() as c:
        (dups,) = c.execute(select(t.inbox.c.duplicates)).one()
    assert dups == 1


def test_a_source_writes_to_fhir_with_its_own_api_token(
    client: TestClient, token: str, engine: Engine, settings: Settings
) -> None:
    """The synchronous FHIR API takes a source's REST API token as it takes a source JWT:
    what it writes is recorded as that source's; a disabled source or a wrong secret is
    refused."""
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    r = client.post("/fhir/Organization", headers=auth,
                    content=orjson.dumps({"resourceType": "Organization", "name": "Clinic"}))
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    from usmis.fhir import tables as ft

    with engine.connect() as conn:
        stored = conn.execute(select(ft.resource.c.source_id).where(
            ft.resource.c.id == rid)).scalar_one()
    assert stored == "ehr-test"
    wrong = token.rsplit(".", 1)[0] + ".not-the-secret"
    r = client.get(f"/fhir/Organization/{rid}", headers={"Authorization": f"Bearer {wrong}"})
    assert r.status_code == 401
    assert r.json()["resourceType"] == "OperationOutcome"
    with transaction(engine) as conn:
        sources.set_enabled(conn, "ehr-test", False)
    r = client.get(f"/fhir/Organization/{rid}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
