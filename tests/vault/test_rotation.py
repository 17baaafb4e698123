"""`usmis keys rotate` re-wraps every data key while a real server keeps serving."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from sqlalchemy import select

from fhir.conftest import LiveServer, make_patient
from usmis.config import Settings
from usmis.fhir.tables import resource, resource_history
from usmis.kit.crypto import Keyring, LocalKeyFile
from usmis.kit.db import make_engine, transaction
from usmis.mpi import service as mpi
from usmis.mpi.tables import link as mpi_link
from usmis.vault.rotation import envelope_tables


def test_rotate_while_serving(settings: Settings, live_server: LiveServer) -> None:
    ids: list[str] = []
    errors: list[int] = []
    stop = threading.Event()
    with httpx.Client(base_url=live_server.url, headers=live_server.headers, timeout=60) as c:
        for i in range(10):
            r = c.post("/fhir/Patient", json=make_patient(iin=f"9001013{i:05d}"))
            ids.append(r.json()["id"])
        c.put(f"/fhir/Patient/{ids[0]}", json={**c.get(f"/fhir/Patient/{ids[0]}").json(),
                                                "active": True})
        old = LocalKeyFile(settings.resolved_key_file).current_kek_id()
        engine = make_engine(settings.resolved_database_url)
        with transaction(engine) as conn:  # the patient index's sealed match profiles
            for rid in ids:
                mpi.link_source_patient(conn, settings, rid)

        def keep_serving() -> None:
            with httpx.Client(base_url=live_server.url, headers=live_server.headers,
                              timeout=60) as w:
                while not stop.is_set():
                    r = w.post("/fhir/Patient", json=make_patient())
                    if r.status_code != 201:
                        errors.append(r.status_code)
                    else:
                        ids.append(r.json()["id"])
                    r = w.get(f"/fhir/Patient/{ids[0]}")
                    if r.status_code != 200:
                        errors.append(r.status_code)

        writer = threading.Thread(target=keep_serving)
        writer.start()
        env = {**os.environ, "USMIS_DATA_DIR": str(settings.data_dir),
               "USMIS_DATABASE_URL": settings.resolved_database_url}
        out = subprocess.run(
            [str(Path(sys.executable).parent / "usmis"), "keys", "rotate", "--purge"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )
        stop.set()
        writer.join()
        assert out.returncode == 0, out.stderr[-2000:]
        assert errors == []
        kf = LocalKeyFile(settings.resolved_key_file)
        new = kf.current_kek_id()
        assert new != old
        assert kf.kek_ids() == [new]  # purged
        try:
            with engine.connect() as conn:
                tables = envelope_tables()
                assert {resource, resource_history, mpi_link} <= set(tables)
                for t in tables:  # every sealed table: store, inbox, MPI, grants, …
                    keks = set(conn.execute(select(t.c.kek_id).distinct()).scalars())
                    assert keks <= {new, None}, t.name
                keys = Keyring(kf)  # only the new KEK is left: the profiles still open
                profiles = conn.execute(select(mpi_link)).all()
                assert len(profiles) == 10
                assert {mpi.open_profile(keys, row).key for row in profiles} == set(ids[:10])
        finally:
            engine.dispose()
        for rid in ids:
            assert c.get(f"/fhir/Patient/{rid}").status_code == 200
        assert c.get(f"/fhir/Patient/{ids[0]}/_history/1").status_code == 200
