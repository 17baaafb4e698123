"""The README's main job, `usmis demo`, end to end on a tiny nation, and its tokens work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from usmis.app import create_app
from usmis.config import Settings

JWT = re.compile(r"^(eyJ[\w-]+\.[\w-]+\.[\w-]+)$", re.M)


@pytest.mark.slow
def test_demo_runs_every_stage_and_prints_working_tokens(tmp_path: Path) -> None:
    env = {**os.environ, "USMIS_DATA_DIR": str(tmp_path / "data")}
    env.pop("USMIS_DATABASE_URL", None)
    run = subprocess.run(
        [sys.executable, "-m", "usmis", "demo", "--people", "80", "--no-serve"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    for stage in ("1. synthetic nation", "2. ingest", "3. patient index", "4. oversight",
                  "5. try it"):
        assert stage in out
    assert (tmp_path / "data" / "oversight" / "report.html").stat().st_size > 1000
    clinician, patient, auditor, _investigator = JWT.findall(out)
    patient_id = re.search(r"patient (\S+) \(attached there\)", out)
    assert patient_id is not None

    settings = Settings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        everything = client.get(f"/fhir/Patient/{patient_id[1]}/$everything",
                                headers={"Authorization": f"Bearer {clinician}"})
        assert everything.status_code == 200, everything.text
        assert everything.json()["resourceType"] == "Bundle"
        own = client.get(f"/fhir/Patient/{patient_id[1]}",
                         headers={"Authorization": f"Bearer {patient}"})
        assert own.status_code == 200
        audit = client.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {auditor}"})
        assert audit.status_code == 200
        assert client.get(f"/fhir/Patient/{patient_id[1]}").status_code == 401
