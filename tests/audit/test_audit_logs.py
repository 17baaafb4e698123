"""The demo flow at DEBUG level leaves no IIN, name or phone of the population in any log."""

from __future__ import annotations

import csv
import logging
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from usmis.access.tokens import issue_token
from usmis.app import create_app
from usmis.config import Settings
from usmis.kit import logging as kit_logging

IIN = "https://usmis.kz/sid/iin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_demo_flow_at_debug_level_logs_no_personal_data(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from usmis.ingest.service import ingest_nation
    from usmis.synth.generator import generate

    nation = tmp_path / "nation"
    generate(nation, 10, 11)
    port = _free_port()
    settings = Settings(data_dir=tmp_path / "data", log_level="DEBUG",
                        base_url=f"http://127.0.0.1:{port}")
    monkeypatch.setenv("USMIS_LOG_LEVEL", "DEBUG")  # the ingest workers too
    monkeypatch.setenv("USMIS_DATA_DIR", str(settings.data_dir))
    kit_logging.configure("DEBUG")
    caplog.set_level(logging.DEBUG)
    # The test's own HTTP client is not the application: keep its request lines out.
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.WARNING, logger=name)
    ingest_nation(settings, nation)

    with (nation / "ground_truth" / "people.csv").open(encoding="utf-8") as fh:
        people = list(csv.DictReader(fh))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="debug", access_log=True))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        base = f"http://127.0.0.1:{port}"

        def h(**claims: str) -> dict[str, str]:
            return {"Authorization": "Bearer " + issue_token(settings, **claims)}

        admin = h(subject="ops", role="admin")
        with httpx.Client(base_url=base, timeout=60) as c:
            for person in people[:3]:
                # Searches whose query strings carry an IIN, a name, a phone.
                r = c.get("/fhir/Patient", params={"identifier": f"{IIN}|{person['iin']}"},
                          headers=admin)
                assert r.status_code == 200
                c.get("/fhir/Patient", params={"family": person["surname"]}, headers=admin)
                c.get("/fhir/Patient", params={"telecom": person["phone"]}, headers=admin)
                ids = [e["resource"]["id"] for e in r.json().get("entry", [])]
                doc = h(subject="dr-1", role="clinician", org=person["attached_bin"])
                stranger = h(subject="dr-2", role="clinician", org="no-such-org")
                for pid in ids:
                    assert c.get(f"/fhir/Patient/{pid}", headers=stranger).status_code == 403
                for pid in ids:
                    c.get(f"/fhir/Patient/{pid}", headers=doc)
                    c.get(f"/fhir/Patient/{pid}/$everything", headers=doc)
                    c.post("/access/break-glass", json={"patient": pid,
                                                        "reason": "collapsed at the station"},
                           headers=stranger)
                    c.get(f"/fhir/Patient/{pid}", headers=stranger)
                    me = h(subject=f"patient-{pid}", role="patient", patient=pid)
                    c.get("/audit/my-access", headers=me)
                # Bad input that carries personal data must not echo it.
                c.post("/fhir/Patient", headers=admin, json={
                    "resourceType": "Patient", "birthDate": person["iin"],
                    "name": [{"family": 42, "given": person["given_name"]}]})
            dpo = h(subject="dpo", role="auditor")
            assert c.get("/fhir/AuditEvent", headers=dpo).status_code == 200
            c.get("/audit/review-queue", headers=dpo)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    from usmis.cli import app

    assert CliRunner().invoke(app, ["audit", "verify"]).exit_code == 0

    out, err = capfd.readouterr()
    text = "\n".join([out, err, caplog.text])
    assert "identifier=*" in text  # the access log ran, with the value redacted
    leaks = []
    for person in people:
        for field in ("iin", "surname", "given_name", "phone"):
            value = person[field]
            if value and len(value) >= 4 and value in text:
                leaks.append(f"{person['person_id']}.{field}")
        if person["phone"] and person["phone"].lstrip("+") in text:
            leaks.append(f"{person['person_id']}.phone-digits")
    if leaks:  # show where, without printing the values themselves
        lines = [ln[:60] for ln in text.splitlines()
                 if any(p["iin"] in ln or p["phone"].lstrip("+") in ln for p in people)]
        pytest.fail(f"personal data in the logs: {leaks[:10]}; lines start: {lines[:5]}")
