"""The read spool: a killed process's journal reaches the chain once, nothing lost or doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from sqlalchemy import text

from usmis.audit import service
from usmis.audit.model import AuditRecord
from usmis.audit.spool import AuditSpool, recover, spool_dir
from usmis.config import Settings
from usmis.kit.db import make_engine

CHILD = textwrap.dedent("""
    import sys, time
    from usmis.audit.model import AuditRecord
    from usmis.audit.spool import AuditSpool
    from usmis.config import Settings
    from usmis.kit.db import make_engine

    s = Settings.model_validate_json(sys.stdin.read())
    spool = AuditSpool(make_engine(s.resolved_database_url), s)
    def read(i):
        spool.submit(AuditRecord(action="read", subject="dr-1", role="clinician",
                                 resource_type="Observation", entities=(f"Observation/{i}",),
                                 patients=(f"p{i % 3}",)))
    for i in range(10):
        read(i)
    assert spool.drain(30)      # these ten are in the chain, the mark moved past them
    spool.interval = 3600       # the next fifteen stay journaled only
    for i in range(10, 25):
        read(i)
    print("journaled", flush=True)
    time.sleep(600)
""")


def _entities(engine: object) -> list[str]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(text("SELECT entities FROM audit_entry ORDER BY seq")).scalars()
        return [json.loads(r)[0] for r in rows]


def test_a_killed_process_journal_is_replayed_exactly_once(settings: Settings) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write(settings.model_dump_json())
    child.stdin.close()
    assert child.stdout.readline().strip() == "journaled"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)

    engine = make_engine(settings.resolved_database_url)
    assert len(_entities(engine)) == 10
    (file,) = spool_dir(settings).glob("*.jsonl")
    with file.open("ab") as fh:
        fh.write(b'{"recorded": "2026-')  # as if the machine had stopped mid-write
    assert recover(engine, settings) == 15
    assert _entities(engine) == [f"Observation/{i}" for i in range(25)]
    assert list(spool_dir(settings).iterdir()) == []
    assert recover(engine, settings) == 0
    with engine.connect() as conn:
        assert service.verify(conn, settings).ok
        marks = conn.execute(text("SELECT count(*) FROM audit_spool")).scalar_one()
        by_patient = conn.execute(text(
            "SELECT count(*) FROM audit_patient WHERE patient_id = 'p0'")).scalar_one()
    assert marks == 0
    assert by_patient == 9  # 0, 3, …, 24
    engine.dispose()


def test_a_live_process_journal_is_left_to_it(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)
    spool = AuditSpool(engine, settings.model_copy(update={"audit_spool_interval_ms": 3_600_000}))
    for i in range(3):
        spool.submit(AuditRecord(action="search", subject="dr-2", role="clinician",
                                 entities=(f"Patient/{i}",)))
    assert recover(engine, settings) == 0  # its flock is held: not a dead process's file
    assert _entities(engine) == []
    spool.interval = 0
    spool.close()
    assert _entities(engine) == ["Patient/0", "Patient/1", "Patient/2"]
    assert list(spool_dir(settings).iterdir()) == []
    engine.dispose()
