"""``usmis db upgrade`` and ``usmis serve`` as a user runs them: real processes, a fresh
data directory (SQLite file and key file made on first run), real HTTP."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from usmis.access.tokens import issue_token
from usmis.config import Settings


def _usmis(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "usmis", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


def test_db_upgrade_then_serve_with_two_workers(tmp_path: Path) -> None:
    data = tmp_path / "usmis-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("USMIS_")}
    env["USMIS_DATA_DIR"] = str(data)
    first = _usmis("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert (data / "usmis.db").exists()
    assert _usmis("db", "upgrade", env=env).returncode == 0  # again: nothing to do
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "usmis", "serve", "--port", str(port),
                             "--workers", "2"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.get(f"{base}/fhir/metadata").json()["fhirVersion"] == "4.0.1"
        assert httpx.get(f"{base}/fhir/Patient").status_code == 401
        key = Settings(data_dir=data).resolved_key_file
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600  # made on first run
        token = issue_token(Settings(data_dir=data), subject="t", role="admin")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
            created = c.post("/fhir/Organization",
                             json={"resourceType": "Organization", "name": "X"})
            assert created.status_code == 201
            for _ in range(6):  # whichever worker answers sees it
                assert c.get(f"/fhir/Organization/{created.json()['id']}").status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
