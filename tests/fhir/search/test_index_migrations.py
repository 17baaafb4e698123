"""Migrations of the search index tables (fhir_search_0002, 0003, 0004)."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text

from usmis.fhir.search import write_index
from usmis.kit.db import alembic_config

from .conftest import Store, blind


def _params(store: Store) -> list[tuple[str, str]]:
    with store.engine.connect() as c:
        return sorted((r.res_id, r.param) for r in c.execute(text(
            "SELECT res_id, param FROM fhir_idx_string WHERE res_type = 'Organization'")))


def test_rows_of_the_old_address_parameter_stay_searchable(store: Store, database_url: str
                                                           ) -> None:
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "fhir_search_0001")
    store.add({"resourceType": "Organization", "id": "o1", "name": "Clinic",
               "address": [{"line": ["Abai 10"], "city": "Almaty"}]})
    with store.engine.begin() as c:  # what the indexer wrote before: the whole address
        c.execute(text("DELETE FROM fhir_idx_string WHERE param LIKE '%address%'"))
        c.execute(text("INSERT INTO fhir_idx_string (res_type, res_id, param, norm, exact) "
                       "VALUES ('Organization', 'o1', 'address', 'abai 10', 'Abai 10'), "
                       "('Organization', 'o1', 'address', 'almaty', 'Almaty')"))
    assert store.ids("Organization", "address=abai") == set()  # the union misses them
    command.upgrade(cfg, "heads")
    assert ("o1", "~address-other") in _params(store)
    assert store.ids("Organization", "address=abai") == {"o1"}
    assert store.ids("Organization", "address=almaty") == {"o1"}
    command.downgrade(cfg, "fhir_search_0001")
    assert ("o1", "address") in _params(store)
    assert ("o1", "~address-other") not in _params(store)
    command.upgrade(cfg, "heads")


def test_the_reference_identifier_index_holds_only_identifiers(store: Store) -> None:
    store.add({"resourceType": "Observation", "id": "ob1", "status": "final",
               "code": {"text": "x"}, "subject": {"reference": "Patient/p1"},
               "performer": [{"identifier": {"system": "urn:x", "value": "D-1"}}]})
    with store.engine.connect() as c:
        if c.dialect.name == "postgresql":
            sql = c.execute(text("SELECT indexdef FROM pg_indexes "
                                 "WHERE indexname = 'ix_fhir_idx_reference_ident'")).scalar_one()
        else:
            sql = c.execute(text("SELECT sql FROM sqlite_master "
                                 "WHERE name = 'ix_fhir_idx_reference_ident'")).scalar_one()
    assert "id_value IS NOT NULL" in sql
    assert store.ids("Observation", "performer:identifier=urn:x|D-1") == {"ob1"}
    assert store.ids("Observation", "subject=Patient/p1") == {"ob1"}


def _res_indexes(store: Store) -> dict[str, str]:
    with store.engine.connect() as c:
        return {r.indexname: r.indexdef for r in c.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'ix_fhir_idx_%_res'"))}


def test_postgresql_probes_a_resource_s_rows_through_a_hash_index(
        store: Store, database_url: str) -> None:
    if store.engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL index method")
    defs = _res_indexes(store)
    assert len(defs) == 5
    assert all("USING hash (res_id)" in d for d in defs.values()), defs
    store.add({"resourceType": "Observation", "id": "ob1", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
               "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-03-01"})
    store.add({"resourceType": "Observation", "id": "ob2", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "1742-6"}]},
               "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-03-02"})
    # the second condition of each is a correlated probe of a resource's rows
    assert store.ids("Observation", "subject=Patient/p1&code=2345-7") == {"ob1"}
    assert store.ids("Observation", "code=1742-6&date=2024-03-02") == {"ob2"}
    assert store.ids("Observation", "subject=Patient/p1&code:not=2345-7") == {"ob2"}
    with store.engine.begin() as c:  # a new version of ob1 replaces its rows
        write_index(c, "Observation", {
            "resourceType": "Observation", "id": "ob1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1742-6"}]},
            "subject": {"reference": "Patient/p1"}}, blind, replace=True)
    assert store.ids("Observation", "code=2345-7") == set()
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "fhir_search_0003")
    assert all("USING btree (res_type, res_id, param)" in d
               for d in _res_indexes(store).values())
    assert store.ids("Observation", "subject=Patient/p1&code=1742-6") == {"ob1", "ob2"}
    command.upgrade(cfg, "heads")
    assert all("USING hash" in d for d in _res_indexes(store).values())
