"""fhir_search_0005 erases the plaintext free text that older indexes kept; ``usmis db
reindex`` writes it again, blind, from the encrypted resources."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import text
from typer.testing import CliRunner

from usmis.cli import app
from usmis.config import Settings
from usmis.fhir.search.service import search
from usmis.fhir.service import SEARCH_PURPOSE, FhirService
from usmis.kit.crypto import Keyring
from usmis.kit.db import alembic_config, transaction

NOTE = {"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}],
                 "text": "Height of Ivanova"},
        "subject": {"reference": "Patient/p1"}, "valueString": "Ivanova stood straight"}


def _ids(engine: Any, keys: Keyring, query: str) -> set[str]:
    name, _, value = query.partition("=")
    with engine.connect() as conn:
        res = search(conn, "Observation", [(name, value)], base_url="http://x/fhir",
                     hmac=lambda v: keys.blind_index(SEARCH_PURPOSE, v))
    return set(res.ids)


def test_migration_erases_plaintext_and_reindex_restores_blind_search(
    settings: Settings, engine: Any, keys: Keyring, monkeypatch: Any
) -> None:
    with transaction(engine) as conn:
        rid = FhirService(conn, keys).create(dict(NOTE)).resource["id"]
    assert _ids(engine, keys, "code:text=ivanova height") == {rid}
    cfg = alembic_config(settings.resolved_database_url)
    command.downgrade(cfg, "fhir_search_0003")
    with engine.begin() as c:  # what the indexer wrote before: folded plaintext
        c.execute(text("UPDATE fhir_idx_token SET text = 'height of ivanova' "
                       "WHERE res_id = :r AND param = 'code'"), {"r": rid})
        c.execute(text("DELETE FROM fhir_idx_token WHERE res_id = :r "
                       "AND param = 'value-string'"), {"r": rid})
        c.execute(text("INSERT INTO fhir_idx_string (res_type, res_id, param, norm, exact) "
                       "VALUES ('Observation', :r, 'value-string', 'ivanova stood straight', "
                       "'Ivanova stood straight')"), {"r": rid})
    command.upgrade(cfg, "heads")
    with engine.connect() as c:
        plain = c.execute(text(
            "SELECT count(*) FROM fhir_idx_token WHERE text LIKE '%ivanova%'")).scalar_one()
        strings = c.execute(text("SELECT count(*) FROM fhir_idx_string "
                                 "WHERE param = 'value-string'")).scalar_one()
    assert (plain, strings) == (0, 0)
    assert _ids(engine, keys, "code:text=ivanova") == set()  # until reindexed
    assert _ids(engine, keys, "value-string=ivanova") == set()
    monkeypatch.setenv("USMIS_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("USMIS_DATA_DIR", str(settings.data_dir))
    r = CliRunner().invoke(app, ["db", "reindex"])
    assert r.exit_code == 0, r.output
    assert "reindexed 1 resources" in r.output
    assert _ids(engine, keys, "code:text=ivanova") == {rid}
    assert _ids(engine, keys, "value-string=STOOD ivanova") == {rid}
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM fhir_idx_token "
                              "WHERE text LIKE '%ivanova%'")).scalar_one() == 0
