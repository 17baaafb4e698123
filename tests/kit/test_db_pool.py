"""The connection pool hands out connections as the unit of work expects them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from usmis.config import Settings
from usmis.fhir.context import SystemAccess
from usmis.fhir.service import FhirService
from usmis.kit.crypto import keyring_for
from usmis.kit.db import make_engine


def test_a_search_turns_preparation_off_only_until_its_connection_is_returned(
    settings: Settings,
) -> None:
    """A FHIR search plans its statements for their values (psycopg's automatic
    preparation off); the next unit of work on the same pooled connection gets the
    prepared statements back.  A lookup by identifier turns it off for itself only."""
    if settings.is_sqlite:
        pytest.skip("statement preparation is psycopg's (PostgreSQL)")
    engine = make_engine(settings.resolved_database_url, pool_size=1)
    keys = keyring_for(settings.resolved_key_file)
    try:
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            svc = FhirService(conn, keys, SystemAccess())
            svc.search_ids("Patient", "identifier=https://usmis.kz/sid/iin|900101300001")
            assert driver.prepare_threshold == 5  # type: ignore[union-attr]
            svc.search_ids("Patient", "birthdate=1990-01-01")
            assert driver.prepare_threshold is None  # type: ignore[union-attr]
        with engine.connect() as conn:
            assert conn.connection.driver_connection is driver  # the same pooled connection
            for x in range(6):
                conn.execute(text("SELECT 1 + :x"), {"x": x})
            prepared = conn.execute(text(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT 1 + %'"
            )).scalar_one()
            assert prepared == 1
    finally:
        engine.dispose()


def test_postgresql_connections_run_without_jit(settings: Settings) -> None:
    """JIT compiling cost 195 ms on a 5 ms lookup once the patient index had grown."""
    if settings.is_sqlite:
        pytest.skip("JIT is PostgreSQL's")
    engine = make_engine(settings.resolved_database_url,
                         connect_args={"application_name": "usmis-test"})
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW jit")).scalar_one() == "off"
            assert conn.execute(text("SHOW application_name")).scalar_one() == "usmis-test"
    finally:
        engine.dispose()


def test_a_migrated_sqlite_file_is_in_wal_mode_and_its_copies_open_together(
    tmp_path: Path,
) -> None:
    """``upgrade`` leaves the file in WAL mode (byte 18 of its header is 2), so copies of it
    never need switching; eight connections opening a fresh copy at once all get through
    (switching there had failed "database is locked" now and then)."""
    import shutil
    import threading

    from sqlalchemy.pool import NullPool

    from usmis.kit.db import upgrade

    upgrade(f"sqlite:///{tmp_path / 'tmpl.db'}")
    assert (tmp_path / "tmpl.db").read_bytes()[18] == 2
    errors: list[BaseException] = []
    for run in range(10):
        copy = tmp_path / f"copy{run}.db"
        shutil.copyfile(tmp_path / "tmpl.db", copy)
        engine = make_engine(f"sqlite:///{copy}", poolclass=NullPool)
        start = threading.Barrier(8)

        def opener(k: int, engine: Any = engine, start: Any = start) -> None:
            try:
                start.wait()
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO audit_spool (name, \"offset\") "
                                      "VALUES (:n, 0)"), {"n": f"s{k}"})
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=opener, args=(k,)) for k in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_spool")).scalar_one() == 8
        engine.dispose()
    assert errors == []
