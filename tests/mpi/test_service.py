"""The index on a real database: real-time linking, operations, and the record following."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from sqlalchemy import Engine

from usmis.config import Settings
from usmis.fhir.service import FhirService
from usmis.kit.db import make_engine, transaction
from usmis.kit.errors import BadRequest
from usmis.mpi import service
from usmis.mpi.service import keyring

from .factories import make_iin

BIRTH = date(1985, 3, 14)
IIN = make_iin(BIRTH, "F")


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings.resolved_database_url)
    yield eng
    eng.dispose()


def patient(
    source: str,
    local_id: str,
    *,
    family: str = "Нұрланова",
    given: tuple[str, ...] = ("Жанна", "Сәрсенбайқызы"),
    iin: str | None = IIN,
    birth: str = "1985-03-14",
    gender: str = "female",
    phone: str | None = "+7 701 555 0101",
) -> dict[str, Any]:
    ids = [{"system": f"https://usmis.kz/sid/source/{source}/patient", "value": local_id}]
    if iin:
        ids.append({"system": "https://usmis.kz/sid/iin", "value": iin})
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": ids,
        "name": [{"family": family, "given": list(given)}],
        "gender": gender,
        "birthDate": birth,
    }
    if phone:
        res["telecom"] = [{"system": "phone", "value": phone}]
    return res


def store_and_link(engine: Engine, settings: Settings, res: dict[str, Any]) -> tuple[str, str]:
    with transaction(engine) as conn:
        pid = FhirService(conn, keyring(settings)).create(res).resource["id"]
        person = service.link_source_patient(conn, settings, pid)
    return pid, person


def add_observation(engine: Engine, settings: Settings, patient_id: str, code: str) -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    with transaction(engine) as conn:
        FhirService(conn, keyring(settings)).create(obs)


def record_codes(engine: Engine, settings: Settings, person: str) -> set[str]:
    with transaction(engine) as conn:
        record = service.unified_record(conn, settings, person)
    return {r["code"]["coding"][0]["code"] for r in record if r["resourceType"] == "Observation"}


def test_the_issue_example_links_to_one_woman(engine: Engine, settings: Settings) -> None:
    _, register = store_and_link(engine, settings, patient("register", "1"))
    _, hospital = store_and_link(
        engine, settings, patient("his", "7", family="Nurlanova", given=("Zhanna",), iin=None)
    )
    swapped = IIN[:3] + IIN[4] + IIN[3] + IIN[5:]
    _, lab = store_and_link(
        engine, settings, patient("lab", "9", family="Nurlanova", given=("Janna",), iin=swapped)
    )
    _, pharmacy = store_and_link(
        engine,
        settings,
        patient("ph", "3", family="Нурланова", given=("Жанна", "Сарсенбаевна"), iin=None),
    )
    assert hospital == register
    assert lab == register
    assert pharmacy == register
    with transaction(engine) as conn:
        stats = service.stats(conn)
    assert stats["source_records"] == 4
    assert stats["persons_with_records"] == 1


def test_someone_else_with_a_borrowed_iin_is_not_linked(engine: Engine, settings: Settings) -> None:
    _, owner = store_and_link(engine, settings, patient("register", "1"))
    _, stranger = store_and_link(
        engine,
        settings,
        patient("his", "2", family="Ахметов", given=("Бауыржан", "Серікұлы"),
                birth="1970-01-01", gender="male", phone=None),
    )  # fmt: skip
    assert stranger != owner


def test_relinking_a_stored_patient_is_idempotent(engine: Engine, settings: Settings) -> None:
    pid, person = store_and_link(engine, settings, patient("register", "1"))
    with transaction(engine) as conn:
        assert service.link_source_patient(conn, settings, pid) == person
        assert len(service.history(conn, pid)) == 1


def test_an_unchanged_patient_is_linked_only_when_it_has_no_link(
    engine: Engine, settings: Settings
) -> None:
    from usmis.mpi import repository as repo

    with transaction(engine) as conn:
        pid = FhirService(conn, keyring(settings)).create(patient("register", "1"))\
            .resource["id"]
        with service.batched(conn, [pid]):  # announced, known to have no link: linked
            service.link_unless_linked(conn, settings, pid)
        link = repo.get_link(conn, pid)
        assert link is not None
    for batch in (True, False):  # linked: left as it was (profile not even rewritten)
        with transaction(engine) as conn:
            with service.batched(conn, [pid]) if batch else contextlib.nullcontext():
                service.link_unless_linked(conn, settings, pid)
            assert repo.get_link(conn, pid) == link
    with transaction(engine) as conn:
        other = FhirService(conn, keyring(settings)).create(patient("his", "2")).resource["id"]
        service.link_unless_linked(conn, settings, other)  # not announced: asked, linked
        assert service.person_of(conn, other) == link.person_key


def test_unlink_merge_split_revert_and_the_record_follows(
    engine: Engine, settings: Settings
) -> None:
    a, person = store_and_link(engine, settings, patient("register", "1"))
    b, person_b = store_and_link(engine, settings, patient("his", "5", iin=None))
    assert person_b == person
    add_observation(engine, settings, a, "718-7")
    add_observation(engine, settings, b, "2345-7")
    assert record_codes(engine, settings, person) == {"718-7", "2345-7"}

    with transaction(engine) as conn:
        alone = service.unlink(conn, b, actor="registrar:1", reason="different mother's name")
    assert record_codes(engine, settings, person) == {"718-7"}
    assert record_codes(engine, settings, alone) == {"2345-7"}

    with transaction(engine) as conn:
        op = service.merge(conn, alone, person, actor="registrar:1", reason="confirmed by phone")
        assert service.resolve_person(conn, alone) == person
    assert record_codes(engine, settings, person) == {"718-7", "2345-7"}
    # The retired key still answers with the merged record.
    assert record_codes(engine, settings, alone) == {"718-7", "2345-7"}

    with transaction(engine) as conn:
        service.revert(conn, op, actor="registrar:2", reason="merge was premature")
        assert service.person_of(conn, b) == alone
    assert record_codes(engine, settings, person) == {"718-7"}

    with transaction(engine) as conn:
        service.link(conn, b, person, actor="registrar:2", reason="documents checked")
        new = service.split(conn, person, [b], actor="registrar:3", reason="twins")
        assert service.patients_of(conn, new) == [b]
        actions = [e["action"] for e in service.history(conn, b)]
    assert actions == ["link", "unlink", "merge", "revert", "link", "split"]
    assert record_codes(engine, settings, new) == {"2345-7"}
    with transaction(engine) as conn, pytest.raises(BadRequest):
        service.unlink(conn, a, actor="registrar:3", reason=" ")


def test_hl7_a40_merge_of_two_source_records(engine: Engine, settings: Settings) -> None:
    a, pa = store_and_link(engine, settings, patient("his", "1", iin=None, phone=None))
    b, pb = store_and_link(
        engine, settings,
        patient("his", "2", family="Серікова", given=("Айгүл",), iin=None, birth="1990-01-02",
                phone=None),
    )  # fmt: skip
    assert pa != pb
    with transaction(engine) as conn:
        service.apply_source_merge(conn, a, b, actor="source:his")
        assert service.person_of(conn, b) == pa
        assert sorted(service.patients_of(conn, pb)) == sorted([a, b])


def test_review_queue_decisions(engine: Engine, settings: Settings) -> None:
    _, person = store_and_link(engine, settings, patient("register", "1"))
    # Same name, same birth year and month, different day, no IIN, no phone: uncertain.
    b, other = store_and_link(
        engine, settings, patient("his", "2", iin=None, phone=None, birth="1985-03-17",
                                  given=("Жанна",)),
    )  # fmt: skip
    with transaction(engine) as conn:
        items = service.list_review(conn)
    if other == person:
        pytest.skip("the default model linked it outright; nothing to review")
    assert [i.patient_id for i in items] == [b]
    with transaction(engine) as conn:
        service.decide_review(conn, items[0].id, "link", actor="registrar:1", reason="same")
        assert service.person_of(conn, b) == person
        assert service.list_review(conn) == []


def test_patient_link_from_an_a40_merge_joins_the_persons(
    engine: Engine, settings: Settings
) -> None:
    a, pa = store_and_link(engine, settings, patient("his", "1", iin=None, phone=None))
    survivor = patient("his", "2", family="Серікова", given=("Айгүл",), iin=None,
                       birth="1990-01-02", phone=None)  # fmt: skip
    survivor["link"] = [
        {"other": {"identifier": {"system": "https://usmis.kz/sid/source/his/patient",
                                  "value": "1"}}, "type": "replaces"}
    ]  # fmt: skip
    b, pb = store_and_link(engine, settings, survivor)
    assert pb == pa
    with transaction(engine) as conn:
        assert sorted(service.patients_of(conn, pa)) == sorted([a, b])


def test_concurrent_linking_of_one_new_person_makes_one_person(
    engine: Engine, settings: Settings
) -> None:
    """Two ingest workers link two records of one new person at the same moment."""
    import threading

    with transaction(engine) as conn:
        svc = FhirService(conn, keyring(settings))
        first = svc.create(patient("his_a", "A-1")).resource["id"]
        second = svc.create(patient("lab_b", "B-1")).resource["id"]
    first_linked = threading.Event()
    persons: dict[str, str] = {}

    def link_first() -> None:
        with transaction(engine) as conn:
            persons["first"] = service.link_source_patient(conn, settings, first)
            first_linked.set()
            threading.Event().wait(0.5)  # still uncommitted while the other worker links

    def link_second() -> None:
        first_linked.wait(10)
        with transaction(engine) as conn:
            persons["second"] = service.link_source_patient(conn, settings, second)

    threads = [threading.Thread(target=link_first), threading.Thread(target=link_second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert persons["first"] == persons["second"]
