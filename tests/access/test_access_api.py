"""Who may see what, through the real FHIR API: role × care relationship × consent × operation.

A small world is written through the API by two source systems (his-b of org-B writes
almost everything, his-a of org-A one observation); patients write their Consents
themselves.  Then every principal in the table runs every operation (read, search with
totals, _include, $everything, history, export) on every patient, and what comes back must
be exactly the expected visible set — the denials 403 (or 404 where STORE hides existence).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from usmis.access.context import RequestAccess
from usmis.access.projection import consent_resource
from usmis.access.tokens import TokenVerifier, issue_token
from usmis.app import create_app
from usmis.config import Settings
from usmis.kit.db import make_engine

ICD10 = "http://hl7.org/fhir/sid/icd-10"
PATIENTS = ["att", "enc", "old", "ref", "none", "con", "den"]


def _iso(days_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).isoformat(timespec="seconds")


@dataclass
class World:
    client: TestClient
    settings: Settings
    patient: dict[str, str] = field(default_factory=dict)  # key -> Patient id
    res: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # (pkey, kind)

    def token(self, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(self.settings, **claims)}"}

    def create(self, headers: dict[str, str], body: dict[str, Any]) -> str:
        r = self.client.post(f"/fhir/{body['resourceType']}", json=body, headers=headers)
        assert r.status_code == 201, r.text
        rid: str = r.json()["id"]
        return rid


def build_world(settings: Settings) -> Iterator[World]:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        w = World(client, settings)
        his_b = w.token(subject="client:his-b", role="source", source="his-b", org="org-B")
        his_a = w.token(subject="client:his-a", role="source", source="his-a", org="org-A")
        for key in PATIENTS:
            pid = w.create(his_b, {"resourceType": "Patient", "gender": "female",
                                   "birthDate": "1980-01-01"})
            w.patient[key] = pid
            w.res[(key, "pat")] = ("Patient", pid)
            ref = {"reference": f"Patient/{pid}"}
            w.res[(key, "obs")] = ("Observation", w.create(his_b, {
                "resourceType": "Observation", "status": "final", "subject": ref,
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "valueQuantity": {"value": 70, "unit": "/min"}}))
            if key in ("att", "con"):
                hiv = {"resourceType": "Condition", "subject": ref,
                       "code": {"coding": [{"system": ICD10, "code": "B20"}]}}
                cid = w.create(his_b, hiv)
                w.res[(key, "hiv")] = ("Condition", cid)
                # A second version, so history has superseded rows to hide as well.
                r = client.put(f"/fhir/Condition/{cid}", headers=his_b,
                               json={**hiv, "id": cid, "onsetDateTime": "2020-01-01"})
                assert r.status_code == 200, r.text
            if key in ("att", "con", "den"):
                w.create(his_b, {"resourceType": "EpisodeOfCare", "status": "active",
                                 "patient": ref,
                                 "managingOrganization": {"reference": "Organization/org-A"},
                                 "period": {"start": _iso(400)}})
            if key in ("enc", "old"):
                days = 10 if key == "enc" else 200
                w.create(his_b, {"resourceType": "Encounter", "status": "finished",
                                 "class": {"code": "AMB"}, "subject": ref,
                                 "serviceProvider": {"reference": "Organization/org-A"},
                                 "period": {"start": _iso(days), "end": _iso(days)}})
            if key == "ref":
                w.create(his_b, {"resourceType": "ServiceRequest", "status": "active",
                                 "intent": "order", "subject": ref,
                                 "performer": [{"reference": "Organization/org-A"}]})
            if key == "none":
                w.res[(key, "own")] = ("Observation", w.create(his_a, {
                    "resourceType": "Observation", "status": "final", "subject": ref,
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]}}))
        # The patients restrict sharing themselves, through the API, as FHIR Consent.
        for key, cats, orgs in (("con", ["hiv"], []), ("den", [], ["org-A"])):
            me = w.token(subject=f"patient-{key}", role="patient", patient=w.patient[key])
            w.create(me, consent_resource(w.patient[key], deny_categories=cats, deny_orgs=orgs))
        yield w


PG_URL = os.environ.get("USMIS_TEST_POSTGRES_URL", "")


@pytest.fixture(scope="module", params=["sqlite"] + (["postgresql"] if PG_URL else []))
def world(
    request: pytest.FixtureRequest, _templates: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    """One world per backend for this module (building it is the slow part); the tests
    after the table use subjects of their own, so they do not disturb it."""
    tmp = tmp_path_factory.mktemp("world")
    if request.param == "sqlite":
        shutil.copyfile(_templates["sqlite"], tmp / "usmis.db")
        url = f"sqlite:///{tmp / 'usmis.db'}"
        yield from build_world(Settings(data_dir=tmp / "data", database_url=url))
        return
    name = f"usmis_w_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{_templates["postgresql"]}"'))
    try:
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        yield from build_world(Settings(data_dir=tmp / "data", database_url=url))
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


ALL = {"pat", "obs", "hiv", "own"}
B_ALL = {"pat", "obs", "hiv"}  # what org-B / his-b wrote

# principal -> (claims, {patient key: expected visible kinds})
TABLE: dict[str, tuple[dict[str, Any], dict[str, set[str]]]] = {
    "clinician A (care per patient, consent)": (
        {"subject": "dr-a", "role": "clinician", "org": "org-A"},
        {"att": B_ALL, "enc": {"pat", "obs"}, "old": set(), "ref": {"pat", "obs"},
         "none": {"own"}, "con": {"pat", "obs"}, "den": set()},
    ),
    "clinician A, observations-only scope": (
        {"subject": "dr-a2", "role": "clinician", "org": "org-A",
         "scope": "user/Observation.rs"},
        {"att": {"obs"}, "enc": {"obs"}, "old": set(), "ref": {"obs"}, "none": {"own"},
         "con": {"obs"}, "den": set()},
    ),
    "clinician B (authoring organization, no care)": (
        {"subject": "dr-b", "role": "clinician", "org": "org-B"},
        {k: (B_ALL if k in ("att", "con") else {"pat", "obs"}) for k in PATIENTS},
    ),
    "clinician C (no relationship at all)": (
        {"subject": "dr-c", "role": "clinician", "org": "org-C"},
        {k: set() for k in PATIENTS},
    ),
    "patient 'con' (own record only)": (
        {"subject": "patient-con", "role": "patient", "patient": "@con"},
        {k: (B_ALL if k == "con" else set()) for k in PATIENTS},
    ),
    "source his-b (what it sent)": (
        {"subject": "client:his-b", "role": "source", "source": "his-b", "org": "org-B"},
        {k: (B_ALL if k in ("att", "con") else {"pat", "obs"}) for k in PATIENTS},
    ),
    "source his-a (what it sent)": (
        {"subject": "client:his-a", "role": "source", "source": "his-a", "org": "org-A"},
        {k: ({"own"} if k == "none" else set()) for k in PATIENTS},
    ),
    "auditor (no clinical data)": (
        {"subject": "dpo", "role": "auditor", "scope": "user/*.rs"},
        {k: set() for k in PATIENTS},
    ),
    "registrar (identities only)": (
        {"subject": "reg", "role": "registrar"},
        {k: {"pat"} for k in PATIENTS},
    ),
    "admin (everything, audited)": (
        {"subject": "ops", "role": "admin"},
        {k: (B_ALL if k in ("att", "con") else {"pat", "obs"}) | ({"own"} if k == "none"
                                                                 else set()) for k in PATIENTS},
    ),
}


def _claims(w: World, claims: dict[str, Any]) -> dict[str, Any]:
    out = dict(claims)
    if str(out.get("patient", "")).startswith("@"):
        out["patient"] = w.patient[out["patient"][1:]]
    return out


def check_principal(w: World, name: str, claims: dict[str, Any],
                    expected: dict[str, set[str]]) -> list[str]:
    """Run every operation on every patient; return the mismatches (empty = all good)."""
    h = w.token(**_claims(w, claims))
    bad: list[str] = []
    c = w.client
    for key in PATIENTS:
        pid = w.patient[key]
        visible = expected[key]
        mine = {kind for (pk, kind) in w.res if pk == key}
        # read — each resource: 200 when visible, else 403 with an OperationOutcome.
        for kind in sorted(mine):
            rtype, rid = w.res[(key, kind)]
            r = c.get(f"/fhir/{rtype}/{rid}", headers=h)
            # Denied: 403 saying why — or 404 when a consent hides it (existence must not
            # leak).  Either way an OperationOutcome.
            want = {200} if kind in visible else {403, 404}
            if r.status_code not in want:
                bad.append(f"{name} | {key} | read {kind}: {r.status_code} not in {want}")
            if r.status_code != 200 and r.json()["resourceType"] != "OperationOutcome":
                bad.append(f"{name} | {key} | read {kind}: denial without OperationOutcome")
        # search — exactly the visible resources, and the total says no more.
        for rtype in ("Observation", "Condition"):
            r = c.get(f"/fhir/{rtype}", params={"patient": pid}, headers=h)
            want_ids = {w.res[(key, k)][1] for k in visible & mine if w.res[(key, k)][0] == rtype}
            if r.status_code == 403:
                got_ids: set[str] | None = set()
                total = 0
            elif r.status_code == 200:
                got_ids = {e["resource"]["id"] for e in r.json().get("entry", [])}
                total = r.json().get("total", len(got_ids))
            else:
                got_ids, total = None, -1
            if got_ids != want_ids or total != len(want_ids):
                bad.append(f"{name} | {key} | search {rtype}: {r.status_code} "
                           f"{len(got_ids or ())}/{total} != {len(want_ids)}")
        # _include — the Patient comes along only when it is visible itself.
        r = c.get("/fhir/Observation", params={"patient": pid, "_include": "Observation:patient"},
                  headers=h)
        if r.status_code == 200:
            included = {e["resource"]["id"] for e in r.json().get("entry", [])
                        if e.get("search", {}).get("mode") == "include"}
            has_obs = bool(visible & {"obs", "own"})
            want_inc = {pid} if ("pat" in visible and has_obs) else set()
            if included != want_inc:
                bad.append(f"{name} | {key} | _include: {len(included)} != {len(want_inc)}")
        elif visible & {"obs", "own"}:
            bad.append(f"{name} | {key} | _include: {r.status_code}")
        # $everything — the Patient must be visible; then exactly the visible compartment.
        r = c.get(f"/fhir/Patient/{pid}/$everything", headers=h)
        if "pat" in visible:
            got = {e["resource"]["id"] for e in r.json().get("entry", [])} if r.status_code == 200 \
                else None
            want_ids = {w.res[(key, k)][1] for k in visible & mine}
            if got is None or not want_ids <= got:
                bad.append(f"{name} | {key} | $everything: {r.status_code}")
            hidden = {w.res[(key, k)][1] for k in mine - visible}
            if got and got & hidden:
                bad.append(f"{name} | {key} | $everything leaks {len(got & hidden)}")
        elif r.status_code not in (403, 404):
            bad.append(f"{name} | {key} | $everything: {r.status_code} (expected denial)")
        # history — instance history of each resource, and the type history's contents.
        for kind in sorted(mine):
            rtype, rid = w.res[(key, kind)]
            r = c.get(f"/fhir/{rtype}/{rid}/_history", headers=h)
            ok = r.status_code == 200 and r.json().get("total", 0) >= 1
            if (kind in visible) != ok or (not ok and r.status_code not in (403, 404)):
                bad.append(f"{name} | {key} | history {kind}: {r.status_code}")
    r = c.get("/fhir/Condition/_history", headers=h)
    if r.status_code == 200:
        got_hist = {e["resource"]["id"] for e in r.json().get("entry", []) if "resource" in e}
        hidden = {rid for (pk, kind), (rt, rid) in w.res.items()
                  if rt == "Condition" and kind not in expected[pk]}
        if got_hist & hidden:
            bad.append(f"{name} | type history leaks {len(got_hist & hidden)}")
    return bad


@pytest.mark.slow
def test_authorization_table_through_the_api(world: World) -> None:
    mismatches: list[str] = []
    for name, (claims, expected) in TABLE.items():
        mismatches += check_principal(world, name, claims, expected)
    assert not mismatches, "\n".join(mismatches)


def test_consent_hidden_data_reads_as_absent(world: World) -> None:
    w, c = world, world.client
    doc = w.token(subject="dr-consent", role="clinician", org="org-A")
    r = c.get(f"/fhir/Condition/{w.res[('con', 'hiv')][1]}", headers=doc)
    assert r.status_code == 404
    assert "hiv" not in r.text.lower()
    assert "consent" not in r.text.lower()
    # A whole organization denied: the patient looks absent to it.
    r = c.get(f"/fhir/Patient/{w.patient['den']}", headers=doc)
    assert r.status_code == 404
    # No care relationship: a 403 that says why.
    r = c.get(f"/fhir/Patient/{w.patient['none']}", headers=doc)
    assert r.status_code == 403
    assert "care relationship" in r.json()["issue"][0]["diagnostics"]


def test_break_the_glass_opens_one_patient_for_a_while_and_is_reviewed(world: World) -> None:
    w, c = world, world.client
    doc = w.token(subject="dr-er", role="clinician", org="org-A")
    old = w.patient["old"]
    obs = w.res[("old", "obs")][1]
    r = c.get(f"/fhir/Observation/{obs}", headers=doc)
    assert r.status_code == 403
    assert "care relationship" in r.json()["issue"][0]["diagnostics"]
    r = c.post("/access/break-glass", json={"patient": f"Patient/{old}", "reason": "short"},
               headers=doc)
    assert r.status_code == 400
    r = c.post("/access/break-glass", json={"patient": f"Patient/{old}",
                                            "reason": "unconscious in the emergency room"},
               headers=doc)
    assert r.status_code == 201, r.text
    grant = r.json()["grant"]
    assert c.get(f"/fhir/Observation/{obs}", headers=doc).status_code == 200
    r = c.get(f"/fhir/Patient/{old}/$everything", headers=doc)
    assert r.status_code == 200
    # Only that patient: the glass is not broken for anyone else.
    assert c.get(f"/fhir/Observation/{w.res[('none', 'obs')][1]}", headers=doc).status_code == 403
    # Consent still wins over an emergency.
    r = c.post("/access/break-glass", json={"patient": f"Patient/{w.patient['den']}",
                                            "reason": "unconscious in the emergency room"},
               headers=doc)
    assert r.status_code == 201
    assert c.get(f"/fhir/Observation/{w.res[('den', 'obs')][1]}", headers=doc).status_code == 404
    # Other roles cannot break the glass.
    reg = w.token(subject="reg", role="registrar")
    r = c.post("/access/break-glass", json={"patient": old, "reason": "x" * 20}, headers=reg)
    assert r.status_code == 403
    # The auditor's review queue has it; the patient sees it.
    dpo = w.token(subject="dpo", role="auditor")
    queue = c.get("/audit/review-queue", headers=dpo).json()
    assert grant in {g["id"] for g in queue["emergency_grants"]}
    assert any(a["kind"] == "break-glass" for a in queue["alerts"])
    me = w.token(subject="patient-old", role="patient", patient=old)
    mine = c.get("/audit/my-access", headers=me).json()
    assert [e["who"] for e in mine["emergencies"]] == ["dr-er"]
    assert any(a["emergency"] and a["who"] == "dr-er" and a["allowed"]
               for a in mine["accesses"])
    assert any(not a["allowed"] and a["who"] == "dr-er" for a in mine["accesses"])
    r = c.post(f"/audit/review-queue/{grant}", json={"outcome": "justified"}, headers=dpo)
    assert r.status_code == 200
    assert grant not in {g["id"] for g in c.get("/audit/review-queue", headers=dpo)
                         .json()["emergency_grants"]}
    assert c.post(f"/audit/review-queue/{grant}", json={"outcome": "justified"},
                  headers=dpo).status_code == 409


def test_the_grant_expires(world: World) -> None:
    w = world
    app = w.client.app
    app.state.settings = w.settings.model_copy(  # type: ignore[attr-defined]
        update={"emergency_access_minutes": -1})
    try:
        doc = w.token(subject="dr-late", role="clinician", org="org-A")
        r = w.client.post("/access/break-glass", json={
            "patient": w.patient["old"], "reason": "unconscious in the emergency room"},
            headers=doc)
        assert r.status_code == 201
        assert w.client.get(f"/fhir/Observation/{w.res[('old', 'obs')][1]}",
                            headers=doc).status_code == 403
    finally:
        app.state.settings = w.settings  # type: ignore[attr-defined]


def test_writes_follow_the_policy(world: World) -> None:
    w, c = world, world.client
    doc = w.token(subject="dr-writer", role="clinician", org="org-A", scope="user/*.cruds")
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}}
    # Into the record of a patient in care: yes.  Outside care: no (no self-made care).
    r = c.post("/fhir/Observation",
               json={**obs, "subject": {"reference": f"Patient/{w.patient['att']}"}}, headers=doc)
    assert r.status_code == 201, r.text
    r = c.post("/fhir/Encounter", json={
        "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
        "subject": {"reference": f"Patient/{w.patient['none']}"},
        "serviceProvider": {"reference": "Organization/org-A"}}, headers=doc)
    assert r.status_code == 403
    # Changing another organization's data: no.
    rtype, rid = w.res[("att", "obs")]
    body = c.get(f"/fhir/{rtype}/{rid}", headers=doc).json()
    assert c.put(f"/fhir/{rtype}/{rid}", json=body, headers=doc).status_code == 403
    # A source writes only as itself; it cannot touch what another source sent.
    his_a = w.token(subject="client:his-a", role="source", source="his-a", org="org-A")
    assert c.put(f"/fhir/{rtype}/{rid}", json=body, headers=his_a).status_code == 403
    assert c.delete(f"/fhir/{rtype}/{rid}", headers=his_a).status_code == 403
    # A patient writes only their own Consent.
    me = w.token(subject="patient-att", role="patient", patient=w.patient["att"])
    r = c.post("/fhir/Consent", json=consent_resource(w.patient["enc"], deny_categories=["hiv"],
                                                      deny_orgs=[]), headers=me)
    assert r.status_code == 403
    assert c.post("/fhir/Observation", json={**obs, "subject": {
        "reference": f"Patient/{w.patient['att']}"}}, headers=me).status_code == 403


def test_export_needs_a_role_with_a_declared_purpose(world: World) -> None:
    from usmis.fhir.service import FhirService
    from usmis.kit.crypto import keyring_for
    from usmis.kit.errors import Forbidden

    w = world
    engine = make_engine(w.settings.resolved_database_url)
    keys = keyring_for(w.settings.resolved_key_file)
    verifier = TokenVerifier(w.settings)

    def export(**claims: Any) -> set[str]:
        p = verifier.verify(issue_token(w.settings, **claims))
        ctx = RequestAccess(p, w.settings, engine)
        try:
            with engine.begin() as conn:
                return {r["id"] for r in FhirService(conn, keys, ctx).iter_resources("Condition")}
        finally:
            ctx.flush()

    hiv = {w.res[(k, "hiv")][1] for k in ("att", "con")}
    assert export(subject="ops", role="admin", purpose="HOPERAT") == hiv
    with pytest.raises(Forbidden, match="purpose"):
        export(subject="ops", role="admin")
    with pytest.raises(Forbidden, match="export"):
        export(subject="dr-a", role="clinician", org="org-A", purpose="TREAT")
    # An investigator exports financial data only; conditions stay out, consent applies.
    assert export(subject="inv", role="investigator", purpose="FRAUD") == set()
    engine.dispose()
