"""Real-time candidate retrieval on a real database: big blocks stay cheap and the
strongest candidates are always among those compared."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine

from usmis.config import Settings
from usmis.kit.db import make_engine, transaction
from usmis.mpi import repository as repo
from usmis.mpi import service
from usmis.mpi.model import MatchRecord, make_record
from usmis.synth.names import NamePools

BIRTH = "1990-01-01"  # the date written when only the year is known: a big block


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings.resolved_database_url)
    yield eng
    eng.dispose()


def index(conn: Connection, settings: Settings, record: MatchRecord, person_key: str) -> None:
    """What ``usmis mpi relink`` writes for a record: person, link with profile, keys."""
    keys = service.keyring(settings)
    repo.insert_person(conn, person_key, service._now())
    repo.insert_link(
        conn,
        {"patient_id": record.key, "person_key": person_key, "source_id": "test",
         "method": "relink", "score": None, "actor": "test", "updated_at": service._now(),
         **service.seal_profile(keys, record)},
    )  # fmt: skip
    repo.insert_block_rows(
        conn,
        [{"key": k, "patient_id": record.key} for k in set(service.hashed_keys(keys, record))],
    )


def test_a_big_block_does_not_crowd_out_the_true_match(engine: Engine, settings: Settings) -> None:
    surnames = [s for s in NamePools(3).kz_surnames if not s.startswith("Нұр")]
    limit = 40
    strangers = [
        make_record(f"a{i:04d}", given="Айгерім", surname=surname, birth_date=BIRTH, sex="F")
        for i, surname in enumerate(surnames[: limit + 30])
    ]
    true = make_record(
        "zz-true",  # sorts after every stranger: an arbitrary cut would drop it
        given="Айгерім", surname="Нұрланова", patronymic="Сәрсенбайқызы",
        birth_date=BIRTH, sex="F", phone="+7 701 555 0101",
    )  # fmt: skip
    with transaction(engine) as conn:
        for i, r in enumerate(strangers):
            index(conn, settings, r, f"stranger{i:04d}")
        index(conn, settings, true, "the-woman")

    incoming = make_record(
        "incoming", given="Aigerim", surname="Nurlanova", patronymic="Sarsenbaevna",
        birth_date=BIRTH, sex="F", phone="8 701 555 01 01",
    )  # fmt: skip
    keys = service.hashed_keys(service.keyring(settings), incoming)
    with transaction(engine) as conn:
        rows = repo.candidates(conn, keys, limit=limit)
        assert len(rows) == limit  # the block is bigger than what is compared
        assert rows[0].patient_id == "zz-true"  # shares the most keys
        outcome = service.link_record(conn, settings, incoming)
    assert outcome.person_key == "the-woman"
    assert outcome.method == "probabilistic"
