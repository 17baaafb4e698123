"""Shared fixtures: a fresh, migrated database on every backend under test.

``database_url`` is parametrised over SQLite (always) and PostgreSQL (when
``USMIS_TEST_POSTGRES_URL`` names a server database we may create databases beside;
``.ci/run`` sets it).  Migrations run once per backend into a template; each test gets
a copy (a file copy on SQLite, ``CREATE DATABASE … TEMPLATE`` on PostgreSQL).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from usmis.config import Settings
from usmis.kit.db import upgrade

PG_URL = os.environ.get("USMIS_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _pg_admin() -> object:
    return create_engine(PG_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    made: dict[str, str] = {}
    sqlite_tmpl = tmp_path_factory.mktemp("tmpl") / "template.db"
    upgrade(f"sqlite:///{sqlite_tmpl}")
    made["sqlite"] = str(sqlite_tmpl)
    pg_tmpl = ""
    if PG_URL:
        pg_tmpl = f"usmis_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        admin = create_engine(PG_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{pg_tmpl}"'))
        upgrade(make_url(PG_URL).set(database=pg_tmpl).render_as_string(hide_password=False))
        made["postgresql"] = pg_tmpl
    yield made
    if pg_tmpl:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{pg_tmpl}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, _templates: dict[str, str], tmp_path: Path
) -> Iterator[str]:
    """A fresh migrated database of each backend; dropped after the test."""
    if request.param == "sqlite":
        path = tmp_path / "usmis.db"
        shutil.copyfile(_templates["sqlite"], path)
        yield f"sqlite:///{path}"
        return
    name = f"usmis_t_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{_templates["postgresql"]}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own data dir (key file) and its own database."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    return Settings(data_dir=data_dir, database_url=database_url)
