"""Fixtures of the search tests: a fresh database of each backend and a tiny resource writer.

Resources go into STORE's ``fhir_resource`` table (opaque columns only, no body: search
never reads bodies) and through :func:`usmis.fhir.search.write_index`, the same call the
store makes on every write.
"""

from __future__ import annotations

import hashlib
import hmac as hmac_mod
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import Engine, create_engine, insert, make_url, text, update
from sqlalchemy.pool import NullPool

from usmis.fhir.search import SearchResult, delete_index, search, write_index
from usmis.fhir.tables import resource as resource_table
from usmis.kit.db import make_engine

PG_URL = os.environ.get("USMIS_TEST_POSTGRES_URL", "")  # as in tests/conftest.py
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])

BASE = "http://test.local/fhir"
_KEY = b"test-blind-index-key"


def blind(value: str) -> str:
    return hmac_mod.new(_KEY, value.encode(), hashlib.sha256).hexdigest()[:32]


class Store:
    """Write resources and run searches against one real database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def add(self, res: dict[str, Any], **cols: Any) -> str:
        res = dict(res)
        res.setdefault("id", uuid.uuid4().hex[:16])
        lu = res.get("meta", {}).get("lastUpdated")
        ts = datetime.fromisoformat(lu.replace("Z", "+00:00")) if lu else datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(
                insert(resource_table),
                {
                    "resource_type": res["resourceType"],
                    "id": res["id"],
                    "version_id": 1,
                    "last_updated": ts,
                    "deleted": False,
                    **cols,
                },
            )
            write_index(conn, res["resourceType"], res, blind, replace=False)
        return str(res["id"])

    def delete(self, rtype: str, rid: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(resource_table)
                .where(resource_table.c.resource_type == rtype, resource_table.c.id == rid)
                .values(deleted=True)
            )
            delete_index(conn, rtype, rid)

    def search(self, rtype: str, query: str | list[tuple[str, str]], **kw: Any) -> SearchResult:
        params = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else query
        with self.engine.connect() as conn:
            return search(conn, rtype, params, base_url=BASE, hmac=blind, **kw)

    def ids(self, rtype: str, query: str | list[tuple[str, str]], **kw: Any) -> set[str]:
        return set(self.search(rtype, query, **kw).ids)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    eng = make_engine(database_url)
    yield Store(eng)
    eng.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def world_store(
    request: pytest.FixtureRequest,
    _templates: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Store]:
    """One database per backend per module, loaded with :func:`data.world` (read-only tests).

    Table-driven cases share it instead of migrating and loading a database per case.
    """
    from .data import world

    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("world") / "usmis.db"
        shutil.copyfile(_templates["sqlite"], path)
        url = f"sqlite:///{path}"
        name = ""
    else:
        name = f"usmis_w_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{_templates["postgresql"]}"'))
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    eng = make_engine(url)
    st = Store(eng)
    for res in world():
        st.add(res)
    try:
        yield st
    finally:
        eng.dispose()
        if name:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
