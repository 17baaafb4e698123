"""Migrations of the search index tables (fhir_search_0002, fhir_search_0003)."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from usmis.kit.db import alembic_config

from .conftest import Store


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
