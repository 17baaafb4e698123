"""The audit log's hash chain: appends, checkpoints, and a verifier no tampering escapes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Connection, Engine, text
from typer.testing import CliRunner

from usmis.audit import service
from usmis.audit.model import GENESIS, AuditRecord
from usmis.config import Settings
from usmis.kit.db import make_engine, transaction

N = 12


def fill(settings: Settings, engine: Engine | None = None) -> Engine:
    engine = engine or make_engine(settings.resolved_database_url)
    for i in range(1, N + 1):
        with transaction(engine) as conn:
            service.append(conn, settings, AuditRecord(
                action="read", subject=f"dr-{i % 3}", role="clinician", organization_id="org-A",
                purpose="TREAT", resource_type="Observation", entities=(f"Observation/o{i}",),
                patients=(f"p{i}", f"q{i}") if i % 2 else (f"p{i}",),
            ))
    return engine


@pytest.fixture
def chained(settings: Settings) -> tuple[Settings, Engine]:
    s = settings.model_copy(update={"audit_checkpoint_every": 5})
    return s, fill(s)


def _shift_and_insert(c: Connection) -> None:
    c.execute(text("UPDATE audit_entry SET seq = seq + 1000 WHERE seq > 5"))
    c.execute(text("UPDATE audit_entry SET seq = seq - 999 WHERE seq > 1000"))
    c.execute(text(
        "INSERT INTO audit_entry (seq, recorded, action, outcome, subject, role, emergency,"
        " entities, patients, persons, prev_hash, hash) SELECT 6, recorded, 'read', '0',"
        " 'dr-x', 'clinician', emergency, entities, '[]', '[]', hash, hash FROM audit_entry"
        " WHERE seq = 5"))


def _swap(c: Connection) -> None:
    c.execute(text("UPDATE audit_entry SET seq = -1 WHERE seq = 7"))
    c.execute(text("UPDATE audit_entry SET seq = 7 WHERE seq = 8"))
    c.execute(text("UPDATE audit_entry SET seq = 8 WHERE seq = -1"))


TAMPERS: dict[str, tuple[Callable[[Connection], None], str, int]] = {
    "change a field": (
        lambda c: c.execute(text("UPDATE audit_entry SET subject = 'nobody' WHERE seq = 4")),
        "modified", 4),
    "change the outcome and its hash": (
        lambda c: c.execute(text(
            "UPDATE audit_entry SET outcome = '4', hash = prev_hash WHERE seq = 3")),
        "modified", 3),
    "delete an entry": (
        lambda c: c.execute(text("DELETE FROM audit_entry WHERE seq = 6")), "removed", 6),
    "delete the first entry": (
        lambda c: c.execute(text("DELETE FROM audit_entry WHERE seq = 1")), "removed", 1),
    "insert an entry": (_shift_and_insert, "inserted", 6),
    "reorder two entries": (_swap, "reordered", 7),
    "truncate the tail": (
        lambda c: c.execute(text("DELETE FROM audit_entry WHERE seq > 9")), "truncated", 10),
    "truncate the tail and the head": (
        lambda c: (c.execute(text("DELETE FROM audit_entry WHERE seq > 9")),
                   c.execute(text("UPDATE audit_head SET seq = 9, hash = (SELECT hash FROM "
                                  "audit_entry WHERE seq = 9)"))),
        "truncated", 10),
    "forge a checkpoint": (
        lambda c: c.execute(text("UPDATE audit_checkpoint SET hash = 'f' WHERE seq = 5")),
        "checkpoint", 5),
    "hide an entry from the patient index": (
        lambda c: c.execute(text("DELETE FROM audit_patient WHERE patient_id = 'q3'")),
        "index", 3),
}


def test_an_untouched_chain_verifies(chained: tuple[Settings, Engine]) -> None:
    settings, engine = chained
    with engine.connect() as conn:
        report = service.verify(conn, settings)
    assert report.ok, report.message
    assert (report.entries, report.checkpoints, report.last_seq) == (N, 2, N)


def _reset(engine: Engine) -> None:
    with transaction(engine) as conn:
        for table in ("audit_entry", "audit_patient", "audit_checkpoint"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text(f"UPDATE audit_head SET seq = 0, hash = '{GENESIS}'"))


def test_the_verifier_catches_every_kind_of_tampering(chained: tuple[Settings, Engine]) -> None:
    """Each tampering on a fresh chain (one database per backend, refilled between)."""
    settings, engine = chained
    for tamper, (change, problem, seq) in TAMPERS.items():
        _reset(engine)
        fill(settings, engine)
        with engine.connect() as conn:
            assert service.verify(conn, settings).ok
        with transaction(engine) as conn:
            change(conn)
        with engine.connect() as conn:
            report = service.verify(conn, settings)
        assert not report.ok, tamper
        assert (report.problem, report.seq) == (problem, seq), f"{tamper}: {report.message}"
        assert str(seq) in report.message


def test_cli_verify_exit_codes(
    chained: tuple[Settings, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    from usmis.cli import app

    settings, engine = chained
    monkeypatch.setenv("USMIS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("USMIS_DATABASE_URL", settings.resolved_database_url)
    r = CliRunner().invoke(app, ["audit", "checkpoint"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["audit", "verify"])
    assert r.exit_code == 0, r.output
    assert "intact" in r.output
    with transaction(engine) as conn:
        conn.execute(text("UPDATE audit_entry SET action = 'search' WHERE seq = 8"))
    r = CliRunner().invoke(app, ["audit", "verify"])
    assert r.exit_code == 1
    assert "modified at entry 8" in r.output


def test_an_append_rolls_back_with_the_work(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)

    def work() -> None:
        with transaction(engine) as conn:
            service.append(conn, settings, AuditRecord(action="read", subject="a"))
            raise RuntimeError("the work failed")

    with pytest.raises(RuntimeError):
        work()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_entry")).scalar_one() == 0
        assert service.verify(conn, settings).ok


def test_concurrent_appenders_with_stale_guesses_keep_one_chain(settings: Settings) -> None:
    """Two engines (as two processes would) and several threads append at once: each
    engine's remembered head is often stale, the compare-and-swap must then write nothing
    and fall back.  The chain and the patient index still verify, with no gap."""
    import threading

    engines = [make_engine(settings.resolved_database_url) for _ in range(2)]
    errors: list[BaseException] = []

    def appender(k: int) -> None:
        try:
            for i in range(15):
                with transaction(engines[k % 2]) as conn:
                    service.append(conn, settings, AuditRecord(
                        action="read", subject=f"dr-{k}", patients=(f"p{k}-{i}", f"x{i}")))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with engines[0].connect() as conn:
        report = service.verify(conn, settings)
        assert report.ok, report.message
        assert report.entries == 60
        assert conn.execute(text("SELECT count(*) FROM audit_patient")).scalar_one() == 120
    for e in engines:
        e.dispose()


def test_work_whose_entry_cannot_be_written_does_not_happen(settings: Settings) -> None:
    """Through the real API, reads audited in their own transaction (no spool): with the
    audit log unwritable a read answers 500 without the data, and a create is not stored."""
    from fastapi.testclient import TestClient

    from usmis.access.tokens import issue_token
    from usmis.app import create_app

    settings = settings.model_copy(update={"audit_spool": False})
    engine = make_engine(settings.resolved_database_url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        src = {"Authorization": "Bearer " + issue_token(
            settings, subject="client:his", role="source", source="his", org="org-A")}
        r = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"},
                        headers=src)
        assert r.status_code == 201
        pid = r.json()["id"]
        with transaction(engine) as conn:
            conn.execute(text("ALTER TABLE audit_patient RENAME TO audit_patient_off"))
        try:
            r = client.get(f"/fhir/Patient/{pid}", headers=src)
            assert r.status_code == 500
            assert pid not in r.text
            r = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=src)
            assert r.status_code == 500
        finally:
            with transaction(engine) as conn:
                conn.execute(text("ALTER TABLE audit_patient_off RENAME TO audit_patient"))
        r = client.get("/fhir/Patient", params={"_summary": "count"}, headers=src)
        assert r.json()["total"] == 1
        with engine.connect() as conn:
            assert service.verify(conn, settings).ok
    engine.dispose()


def test_spooled_read_needs_its_journal_and_survives_an_unwritable_log(
    settings: Settings,
) -> None:
    """With the read spool (the default): a read whose entry cannot be journaled answers
    500 without the data; a read while the log's tables are unwritable answers, and its
    entry reaches the chain once they are back."""
    import shutil

    from fastapi.testclient import TestClient

    from usmis.access.tokens import issue_token
    from usmis.app import create_app

    engine = make_engine(settings.resolved_database_url)
    app = create_app(settings)
    spool = app.state.audit_spool
    with TestClient(app, raise_server_exceptions=False) as client:
        src = {"Authorization": "Bearer " + issue_token(
            settings, subject="client:his", role="source", source="his", org="org-A")}
        pid = client.post("/fhir/Patient", json={"resourceType": "Patient"},
                          headers=src).json()["id"]
        shutil.rmtree(spool.directory)
        spool.directory.write_text("not a directory")  # the journal cannot be opened
        r = client.get(f"/fhir/Patient/{pid}", headers=src)
        assert r.status_code == 500
        assert pid not in r.text
        spool.directory.unlink()
        spool.directory.mkdir()

        with transaction(engine) as conn:
            conn.execute(text("ALTER TABLE audit_patient RENAME TO audit_patient_off"))
        try:
            r = client.get(f"/fhir/Patient/{pid}", headers=src)
            assert r.status_code == 200  # journaled; the chain waits for the database
            assert not spool.drain(timeout=0.5)
        finally:
            with transaction(engine) as conn:
                conn.execute(text("ALTER TABLE audit_patient_off RENAME TO audit_patient"))
        assert spool.drain(timeout=30)
        with engine.connect() as conn:
            assert service.verify(conn, settings).ok
            reads = conn.execute(text(
                "SELECT count(*) FROM audit_entry e JOIN audit_patient p ON p.seq = e.seq "
                "WHERE e.action = 'read' AND p.patient_id = :p"), {"p": pid}).scalar_one()
        assert reads == 1
    assert list(spool.directory.iterdir()) == []  # closed drained: its file is gone
    engine.dispose()


def test_a_search_that_finds_nothing_is_recorded_too(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from usmis.access.tokens import issue_token
    from usmis.app import create_app
    from usmis.audit import repository

    token = issue_token(settings, subject="looker", role="admin")
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        r = client.get("/fhir/Patient", params={"identifier": "https://usmis.kz/sid/iin|0"})
        assert r.status_code == 200
        assert r.json().get("entry", []) == []
        r = client.get("/fhir/Observation/_history")
        assert r.status_code == 200
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        mine = [e.content for e in repository.iter_entries(conn)
                if e.content["subject"] == "looker"]
    engine.dispose()
    assert [e["action"] for e in mine] == ["search", "history-type"]
    assert "identifier" in (mine[0]["query"] or "")
