"""Real-time candidate retrieval on a real database: big blocks stay cheap and the
strongest candidates are always among those compared."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select

from usmis.config import Settings
from usmis.kit.db import make_engine, transaction
from usmis.mpi import repository as repo
from usmis.mpi import service
from usmis.mpi.model import MatchRecord, make_record
from usmis.mpi.tables import block, link
from usmis.synth.names import NamePools

from .factories import make_iin

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


IIN = make_iin(date(1985, 3, 14), "F")


def three_records() -> tuple[MatchRecord, MatchRecord, MatchRecord]:
    """A and B share no blocking key and little evidence; C is plainly both."""
    a = make_record("a", given="Жанна", surname="Нұрланова", birth_date="1985-03-14")
    b = make_record("b", given="Zhanna", sex="F", iin=IIN, phone="+7 701 555 0101")
    c = make_record(
        "c", given="Жанна", surname="Нурланова", birth_date="1985-03-14", sex="F", iin=IIN,
        phone="87015550101",
    )  # fmt: skip
    return a, b, c


def test_a_record_linking_strongly_to_two_persons_merges_them(
    engine: Engine, settings: Settings
) -> None:
    a, b, c = three_records()
    with transaction(engine) as conn:
        pa = service.link_record(conn, settings, a).person_key
        pb = service.link_record(conn, settings, b).person_key
        assert pa != pb  # nothing said they were one yet
        out = service.link_record(conn, settings, c)
        assert out.method == "iin"
        assert {service.person_of(conn, k) for k in "abc"} == {out.person_key}
        assert service.resolve_person(conn, pa) == service.resolve_person(conn, pb)
        (merge,) = [e for e in service.history(conn, "a") if e["action"] == "merge"]
        assert merge["actor"] == "mpi"
        service.revert(conn, merge["operation_id"], actor="registrar:1", reason="checked")
        assert service.person_of(conn, "a") == pa
        assert service.resolve_person(conn, pa) == pa


def test_persons_a_registrar_decided_on_are_not_merged_but_reviewed(
    engine: Engine, settings: Settings
) -> None:
    a, b, c = three_records()
    with transaction(engine) as conn:
        service.link_record(conn, settings, a)
        service.link_record(conn, settings, b)
        pa = service.unlink(conn, "a", actor="registrar:1", reason="not her, per the clinic")
        out = service.link_record(conn, settings, c)
        assert service.person_of(conn, "a") == pa != out.person_key
        assert [r.candidate_person_key for r in service.list_review(conn)] == [pa]
        assert len(out.review_ids) == 1


def test_a_merge_answers_the_open_review_items_between_the_two(
    engine: Engine, settings: Settings
) -> None:
    a, b, _ = three_records()
    with transaction(engine) as conn:
        pa = service.link_record(conn, settings, a).person_key
        pb = service.link_record(conn, settings, b).person_key
        item = repo.insert_review(
            conn, {"patient_id": "a", "candidate_person_key": pb, "score": 3.0,
                   "status": "open", "created_at": service._now()},
        )  # fmt: skip
        other = repo.insert_review(
            conn, {"patient_id": "a", "candidate_person_key": "someone-else", "score": 2.0,
                   "status": "open", "created_at": service._now()},
        )  # fmt: skip
        service.merge(conn, pa, pb, actor="registrar:1", reason="same woman, checked")
        assert [r.id for r in service.list_review(conn)] == [other]
        assert [r.id for r in service.list_review(conn, status="obsolete")] == [item]


@pytest.mark.parametrize("announce", [False, True])
def test_a_batch_links_like_one_record_at_a_time(engine: Engine, settings: Settings,
                                                 announce: bool) -> None:
    """Within ``batched`` the rows of new persons and of plain links wait and are written
    together; a later record of the same batch still finds an earlier one (they share
    blocking keys), strangers get persons of their own, a record linked before keeps its
    person, and every row is written by the end."""
    strangers = [make_record(f"s{i}", given="Ержан", surname=f"Тестов{i}ич", sex="M",
                             birth_date=f"19{50 + i}-02-0{1 + i % 9}") for i in range(5)]
    first = make_record("p-first", given="Айгерім", surname="Нұрланова", birth_date="1985-03-14",
                        sex="F", iin=IIN)
    again = make_record("p-again", given="Aigerim", surname="Nurlanova",
                        birth_date="1985-03-14", sex="F", iin=IIN)
    known = make_record("s-known", given="Дана", surname="Бұрынғы", birth_date="1970-07-07",
                        sex="F")
    with transaction(engine) as conn:
        before = service.link_record(conn, settings, known)  # linked before the batch
    ids = ["p-first", "p-again", "s-last", "s-known", *(r.key for r in strangers)]
    with transaction(engine) as conn:
        with service.batched(conn, ids if announce else ()):
            outcomes = [service.link_record(conn, settings, r) for r in [first, *strangers]]
            assert repo.get_link(conn, "p-first") is None  # waiting, not written yet
            same = service.link_record(conn, settings, again)  # shares keys: flushed first
            assert repo.get_link(conn, "p-first") is not None
            assert repo.get_link(conn, "p-again") is None  # linked to a person: waits too
            last = service.link_record(conn, settings, make_record(
                "s-last", given="Болат", surname="Соңғы", birth_date="1999-09-09", sex="M"))
            kept = service.link_record(conn, settings, known)
        assert kept.method == "existing"
        assert kept.person_key == before.person_key
        assert same.person_key == outcomes[0].person_key
        assert same.method == "iin"
        assert len({o.person_key for o in [*outcomes, last]}) == 7
        for key in ["p-first", "p-again", "s-last", *(r.key for r in strangers)]:
            link = repo.get_link(conn, key)
            assert link is not None
            assert repo.get_person(conn, link.person_key) is not None
            assert service.person_of(conn, key) == link.person_key
        assert len(repo.history_of_patient(conn, "s-last")) == 1


def test_a_failing_batch_writes_nothing_it_was_holding(engine: Engine, settings: Settings
                                                       ) -> None:
    def fail_in_batch(conn: Connection) -> None:
        with service.batched(conn):
            service.link_record(conn, settings, make_record(
                "p-held", given="Айгерім", surname="Нұрланова", birth_date="1985-03-14",
                sex="F"))
            raise RuntimeError("the batch fails")

    with transaction(engine) as conn:
        with pytest.raises(RuntimeError, match="the batch fails"):
            fail_in_batch(conn)
        assert repo.get_link(conn, "p-held") is None
        service.link_record(conn, settings, make_record(  # unbatched: written at once
            "p-direct", given="Айгерім", surname="Нұрланова", birth_date="1985-03-14",
            sex="F"))
        assert repo.get_link(conn, "p-direct") is not None


def _patient(pid: str, family: str, given: str, birth: str, sex: str, iin: str = "",
             source: str = "his-a") -> dict[str, Any]:
    idents = [{"system": f"https://usmis.kz/sid/source/{source}/patient", "value": pid}]
    if iin:
        idents.append({"system": "https://usmis.kz/sid/iin", "value": iin})
    return {"resourceType": "Patient", "id": pid, "identifier": idents,
            "name": [{"family": family, "given": [given]}], "birthDate": birth,
            "gender": {"M": "male", "F": "female"}[sex]}


def test_prefetched_candidates_are_the_ones_asked_one_by_one(
        engine: Engine, settings: Settings) -> None:
    """candidates_many gives each record what ranking the blocking table by hand gives:
    the ``limit`` linked records sharing most of its keys (ties by id), with their links."""
    keys = service.keyring(settings)
    people = [make_record(f"r{i}", given=["Ержан", "Болат", "Дана"][i % 3],
                          surname=["Тестов", "Сейтов"][i % 2], birth_date=f"19{60 + i % 4}-01-01",
                          sex="M" if i % 3 < 2 else "F") for i in range(24)]
    with transaction(engine) as conn:
        for i, r in enumerate(people):
            index(conn, settings, r, f"person-{i}")
        asked = {r.key: service.hashed_keys(keys, r) for r in people[::3]}
        asked["nobody"] = ["0" * 32]
        many = repo.candidates_many(conn, asked, limit=5)
        blocks = conn.execute(select(block.c.key, block.c.patient_id)).all()
        links = {r.patient_id: tuple(r) for r in conn.execute(select(
            link.c.patient_id, link.c.person_key, link.c.kek_id, link.c.dek, link.c.profile))}
        for rec, ks in asked.items():
            shared = Counter(pid for key, pid in blocks if key in set(ks))
            ranked = sorted(shared, key=lambda pid: (-shared[pid], pid))[:5]
            assert [tuple(row)[1:] for row in many[rec]] == [links[pid] for pid in ranked]
            assert [tuple(row) for row in repo.candidates(conn, ks, limit=5)] == \
                [("", *links[pid]) for pid in ranked]
        assert many["nobody"] == []
        assert any(len(v) == 5 for v in many.values())  # the limit did bite


def test_a_batch_with_prefetched_candidates_links_as_one_by_one(
        engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's new Patients' candidates come from one lookup at its start, except
    where the batch itself changed them: a record sharing keys with an earlier one of
    the batch, or whose candidate the batch refreshed.  Either way the persons and the
    methods are the ones linking one record at a time gives."""
    iin = make_iin(date(1985, 3, 14), "F")
    before = [_patient("old-1", "Нұрланова", "Айгерім", "1985-03-14", "F", iin),
              _patient("old-2", "Бұрынғы", "Дана", "1970-07-07", "F")]
    batch = [
        _patient("b-1", "Nurlanova", "Aigerim", "1985-03-14", "F", iin, "his-b"),  # old-1
        _patient("b-2", "Тестов", "Ержан", "1960-01-01", "M"),  # a stranger
        _patient("b-3", "Testov", "Erzhan", "1960-01-01", "M", source="his-b"),  # b-2
        _patient("old-2", "Бұрынғы", "Дана", "1970-07-07", "F"),  # refreshed (existing)
        _patient("b-4", "Burynghy", "Dana", "1970-07-07", "F", source="his-b"),  # old-2
        _patient("b-5", "Соңғы", "Болат", "1999-09-09", "M"),  # a stranger
    ]
    with transaction(engine) as conn:
        for res in before:
            service.link_source_patient(conn, settings, res["id"], resource=res)
    asked: list[str] = []
    real = repo.candidates

    def counted(conn: Connection, keys: Any, **kw: Any) -> list[Any]:
        asked.append("x")
        return real(conn, keys, **kw)

    monkeypatch.setattr(repo, "candidates", counted)

    def run(prefetch: bool) -> tuple[set[frozenset[str]], list[str]]:
        with engine.connect() as conn, conn.begin() as tx:
            ids = [r["id"] for r in batch]
            with service.batched(conn, ids, settings=settings if prefetch else None,
                                 resources={r["id"]: r for r in batch}):
                persons = [service.link_source_patient(conn, settings, r["id"], resource=r)
                           for r in batch]
            methods = [repo.get_link(conn, r["id"]).method for r in batch]
            tx.rollback()
        groups: dict[str, set[str]] = {}
        for r, p in zip(batch, persons, strict=True):
            groups.setdefault(p, set()).add(r["id"])
        return {frozenset(g) for g in groups.values()}, methods

    one_by_one = run(prefetch=False)
    asked_one_by_one, asked[:] = len(asked), []
    assert run(prefetch=True) == one_by_one
    assert {frozenset({"b-1"}), frozenset({"b-2", "b-3"}), frozenset({"old-2", "b-4"}),
            frozenset({"b-5"})} == one_by_one[0]
    # b-1 and b-5 took the prefetched rows; b-3 (keys of b-2) and b-4 (old-2 refreshed)
    # asked again.
    assert (asked_one_by_one, len(asked)) == (5, 2)
