"""A copy of the database reveals nobody: raw bytes of SQLite and a pg_dump of
PostgreSQL contain no IIN, surname or phone number of the loaded population."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import make_url, text

from usmis.config import Settings
from usmis.fhir.search.normalize import fold
from usmis.kit.db import make_engine

from .population import IIN, person_bundle, population


def _needles(n: int) -> dict[bytes, str]:
    out: dict[bytes, str] = {}
    for c in population(n):
        out[c.iin.encode()] = "iin"
        # as written, and as a search index would fold it (lower case, accents dropped)
        for form in (c.family, c.family.lower(), fold(c.family)):
            out[form.encode()] = "surname"
        out[c.phone.encode()] = "phone"
        out[c.phone.lstrip("+").encode()] = "phone digits"
    return out


def _raw_database(settings: Settings) -> bytes:
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        return b"".join(
            p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists()
        )
    u = make_url(url)
    return subprocess.run(
        ["pg_dump", "-h", u.host or "127.0.0.1", "-p", str(u.port or 5432),
         "-U", u.username or "postgres", "--no-owner", u.database or ""],
        capture_output=True, check=True, timeout=120,
    ).stdout


def test_no_identity_in_raw_database(client: TestClient, settings: Settings) -> None:
    people = population(30)
    patient_ids = []
    for i, c in enumerate(people):
        r = client.post("/fhir", json=person_bundle(c, i))
        assert r.status_code == 200, r.text
        patient_ids.append(r.json()["entry"][0]["response"]["location"].split("/")[1])
    # searches through blind indexes still find people, and audit rows get written too
    r = client.get("/fhir/Patient", params={"identifier": f"{IIN}|{people[3].iin}"})
    assert r.json()["total"] == 1
    assert r.json()["entry"][0]["resource"]["name"][0]["family"] == people[3].family
    r = client.get("/fhir/Patient", params={"family": people[4].family})
    assert r.json()["total"] >= 1
    r = client.get("/fhir/Patient", params={"phone": people[5].phone})
    assert r.json()["total"] == 1
    # free text is stored blind and still found by whole words (any case), not by parts
    who = people[6]
    for rtype, query in (("Observation", {"value-string": f"{who.family.upper()} stood"}),
                         ("Observation", {"code:text": f"height {who.given}"}),
                         ("Condition", {"onset-info": who.given}),
                         ("DocumentReference", {"description": f"letter {who.family}"})):
        r = client.get(f"/fhir/{rtype}", params={**query, "patient": patient_ids[6]})
        assert r.json()["total"] == 1, (rtype, query)
    r = client.get("/fhir/Observation", params={"value-string": who.family[:3],
                                                "patient": patient_ids[6]})
    assert r.json()["total"] == 0
    r = client.get("/fhir/Observation", params={"value-string:contains": who.family})
    assert r.status_code == 400
    client.app.state.engine.dispose()
    if settings.is_sqlite:  # fold the WAL in too, so both file images are scanned
        eng = make_engine(settings.resolved_database_url)
        with eng.connect() as conn:
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        eng.dispose()

    raw = _raw_database(settings)
    assert len(raw) > 10_000
    # control: the scan does see plaintext columns (opaque ids are stored plain)
    assert patient_ids[0].encode() in raw
    hits = sorted({kind for needle, kind in _needles(30).items() if needle in raw})
    assert hits == [], f"plaintext identity found in the raw database: {hits}"
