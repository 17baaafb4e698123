"""The pipeline end to end: inbox → worker → FHIR store, dead letters, ordering, replay."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hl7.client import MLLPClient
from sqlalchemy import Engine, func, select

from usmis.access import tables as access_tables
from usmis.config import Settings
from usmis.fhir import tables as ft
from usmis.fhir.repository import lock_keys
from usmis.fhir.service import FhirService
from usmis.ingest import deadletters, inbox, sources
from usmis.ingest import tables as t
from usmis.ingest.model import Incoming
from usmis.ingest.pipeline import Pipeline
from usmis.ingest.sealing import keys
from usmis.kit.db import transaction
from usmis.mpi import tables as mpi_tables

from .conftest import Listener
from .factories import make_adt, make_iin, make_oru


def _resources(engine: Engine, settings: Settings, rtype: str) -> list[dict[str, Any]]:
    with engine.connect() as c:
        svc = FhirService(c, keys(settings))
        return list(svc.iter_resources(rtype))


def _count(engine: Engine, rtype: str) -> int:
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(ft.resource).where(
            ft.resource.c.resource_type == rtype)).scalar_one())


def _put(engine: Engine, settings: Settings, raw: str, source: str = "his-test") -> int:
    with transaction(engine) as conn:
        return inbox.receive(conn, settings, Incoming(
            source_id=source, channel="mllp", format="hl7v2", message_id="x",
            raw=raw.encode())).inbox_id


def test_hl7_through_mllp_is_stored_as_fhir_with_provenance(
    mllp: Listener, hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    iin = make_iin()
    with MLLPClient("127.0.0.1", mllp.port) as client:
        client.send_message(make_adt(iin=iin, control="A1"))
        client.send_message(make_oru(control="L1").replace("||ORU", "|s3cret-lab|ORU"))
    result = Pipeline(settings, engine).drain()
    assert (result.done, result.dead) == (2, 0)
    patients = _resources(engine, settings, "Patient")
    assert len(patients) == 2
    enc = _resources(engine, settings, "Encounter")[0]
    his_patient = next(p for p in patients if p["meta"]["source"].endswith("his-test"))
    assert enc["subject"]["reference"] == f"Patient/{his_patient['id']}"
    assert _count(engine, "Observation") == 2
    assert _count(engine, "DiagnosticReport") == 1
    provs = _resources(engine, settings, "Provenance")
    assert len(provs) == 2
    assert {p["entity"][0]["what"]["identifier"]["value"] for p in provs} == {
        "mllp:A1", "mllp:L1"}
    with engine.connect() as c:
        statuses = [r[0] for r in c.execute(select(t.inbox.c.status))]
    assert statuses == ["done", "done"]


def test_replaying_the_same_record_changes_nothing(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    _put(engine, settings, make_adt(control="A1"))
    _put(engine, settings, make_adt(control="A1"))  # identical: deduplicated by the inbox
    _put(engine, settings, make_adt(control="A2"))  # same record, new message: an update
    Pipeline(settings, engine).drain()
    assert _count(engine, "Patient") == 1
    assert _count(engine, "Encounter") == 1
    assert _count(engine, "Condition") == 1


def test_a_record_sent_again_unchanged_makes_no_version_and_is_not_relinked(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    """Each message re-sends its Patient: as it was, the store makes no new version and
    the patient index leaves its link as it was (in the first message's batch and in a
    later one); a change makes a version and refreshes the link's profile."""
    iin = make_iin()

    def state() -> tuple[int, Any, int]:
        with engine.connect() as c:
            version = c.execute(select(ft.resource.c.version_id).where(
                ft.resource.c.resource_type == "Patient")).scalar_one()
            updated = c.execute(select(mpi_tables.link.c.updated_at)).scalar_one()
            events = c.execute(select(func.count()).select_from(
                mpi_tables.link_event)).scalar_one()
        return version, updated, events

    _put(engine, settings, make_adt(control="A1", iin=iin, visit="V1"))
    _put(engine, settings, make_adt(control="A2", iin=iin, visit="V2"))
    assert Pipeline(settings, engine).drain().done == 2
    first = state()
    assert first[0] == 1
    _put(engine, settings, make_adt(control="A3", iin=iin, visit="V3"))
    assert Pipeline(settings, engine).drain().done == 1
    assert state() == first
    assert _count(engine, "Encounter") == 3
    _put(engine, settings, make_adt(control="A4", iin=iin, visit="V4", family="Другой"))
    Pipeline(settings, engine).drain()
    version, updated, events = state()
    assert (version, events) == (2, first[2])
    assert updated > first[1]


def test_later_update_wins_even_if_it_arrives_first(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    newer = make_adt(trigger="A08", control="N", family="Новая", event_time="20240305100000")
    older = make_adt(trigger="A08", control="O", family="Старая", event_time="20240301100000")
    _put(engine, settings, newer)
    Pipeline(settings, engine).drain()
    _put(engine, settings, older)
    Pipeline(settings, engine).drain()
    (patient,) = _resources(engine, settings, "Patient")
    assert patient["name"][0]["family"] == "Новая"


@pytest.mark.parametrize("one_batch", [False, True])
def test_a_record_written_by_id_keeps_its_latest_state_whatever_the_order(
    engine: Engine, settings: Settings, tmp_path: Any, one_batch: bool
) -> None:
    """Reference data written ``PUT Type/id`` (tariffs, payments) is ordered by the source's
    time as conditional updates are: an older row arriving later changes nothing."""
    from usmis.ingest import sources
    from usmis.ingest.channels.files import load_file

    mapping = tmp_path / "tariffs.toml"
    mapping.write_text("""
[read]
format = "csv"
[row]
id = "$code"
event_time = "$as_of|date"
[[resource]]
type = "ChargeItemDefinition"
key = "$code"
put_by = "id"
[resource.body]
url = "https://usmis.kz/cs/tariff/{$code}"
status = "active"
title = "$name"
""", encoding="utf-8")
    with transaction(engine) as conn:
        sources.add_source(conn, source_id="reg_t", name="Tariffs", kind="registry",
                           channels=["file"], formats=["csv"], mapping=str(mapping))
        src = sources.get(conn, "reg_t")
    rows = [("2024-03-05", "newest"), ("2024-03-01", "older"), ("2024-03-03", "middle")]
    for i, (as_of, name) in enumerate(rows):
        path = tmp_path / f"t{i}.csv"
        path.write_text(f"code,as_of,name\nT1,{as_of},{name}\nT{i + 2},{as_of},{name}\n",
                        encoding="utf-8")
        load_file(engine, settings, src, path)
        if not one_batch:
            Pipeline(settings, engine).drain()
    assert Pipeline(settings, engine).drain().dead == 0
    tariffs = {t["url"].rsplit("/", 1)[1]: t for t in
               _resources(engine, settings, "ChargeItemDefinition")}
    assert sorted(tariffs) == ["T1", "T2", "T3", "T4"]  # one resource per record
    assert tariffs["T1"]["title"] == "newest"


def test_bad_message_goes_to_dead_letters_and_does_not_block_others(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    # Valid HL7 that FHIR validation refuses: an impossible period is caught by the mapper,
    # a resource-level problem (bad gender code path) by the mapper, so inject a bad one:
    _put(engine, settings, make_adt(control="G1", patient="P1"))
    bad = _put(engine, settings, make_adt(control="B1", patient="P2", discharge="20230101000000"))
    _put(engine, settings, make_adt(control="G2", patient="P3"))
    result = Pipeline(settings, engine).drain()
    assert (result.done, result.dead) == (2, 1)
    with engine.connect() as conn:
        (dl,) = deadletters.list_letters(conn)
    assert (dl["inbox_id"], dl["rule"], dl["field"]) == (bad, "date-order", "PV1-45")


def test_dead_letter_fix_and_replay(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    _put(engine, settings, make_adt(control="B1", discharge="20230101000000"))
    Pipeline(settings, engine).drain()
    with engine.connect() as conn:
        (dl,) = deadletters.list_letters(conn)
    with transaction(engine) as conn:
        raw = deadletters.show(conn, settings, dl["id"])["content"]
        assert "PV1" in raw
        fixed = raw.replace("20230101000000", "20240310000000")
        deadletters.replay(conn, settings, dl["id"], content=fixed.encode())
    result = Pipeline(settings, engine).drain()
    assert result.done == 1
    assert _count(engine, "Encounter") == 1
    with engine.connect() as conn:
        assert deadletters.list_letters(conn) == []
        assert deadletters.list_letters(conn, status="replayed")[0]["id"] == dl["id"]


def test_replay_by_source_and_rule_requeues_just_those(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    _put(engine, settings, make_adt(control="R1", discharge="20230101000000"))
    _put(engine, settings, make_adt(control="R2", patient="P2", discharge="20230101000000"))
    _put(engine, settings, make_adt(control="R3", patient="P3", birth="19871301"))
    Pipeline(settings, engine).drain()
    with engine.connect() as conn:
        letters = deadletters.list_letters(conn)
    rules = {d["rule"] for d in letters}
    assert len(letters) == 3
    assert len(rules) == 2
    dates = next(d["rule"] for d in letters if d["field"] == "PID-7")
    other = (rules - {dates}).pop()
    with transaction(engine) as conn:
        assert deadletters.replay_matching(conn, settings, source_id="lis-test") == 0
        assert deadletters.replay_matching(conn, settings, source_id="his-test",
                                           rule=other) == 2
    with engine.connect() as conn:
        assert [d["rule"] for d in deadletters.list_letters(conn)] == [dates]
        assert {d["rule"] for d in deadletters.list_letters(conn, status="replayed")} == {other}
    # requeued, still broken: dead again with the same reason (nothing lost either way)
    assert Pipeline(settings, engine).drain().dead == 2
    with engine.connect() as conn:
        assert sorted(d["rule"] for d in deadletters.list_letters(conn)) == sorted(
            [dates, other, other])


def test_a40_merge_marks_the_merged_patient_and_is_recorded(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    _put(engine, settings, make_adt(trigger="A08", control="M0", patient="P099"))
    _put(engine, settings, make_adt(trigger="A40", control="M1", patient="P100", merged="P099"))
    Pipeline(settings, engine).drain()
    patients = {p["identifier"][0]["value"]: p for p in _resources(engine, settings, "Patient")}
    assert patients["P099"]["active"] is False
    assert patients["P099"]["link"][0]["other"]["reference"] == f"Patient/{patients['P100']['id']}"
    from usmis.ingest.service import list_merges

    with engine.connect() as c:
        (merge,) = list_merges(c)
    assert (merge["survivor_patient"], merge["merged_patient"]) == (
        patients["P100"]["id"], patients["P099"]["id"])


def test_file_with_bad_rows_stores_the_good_ones_and_dead_letters_the_rest(
    engine: Engine, settings: Settings, tmp_path: Any
) -> None:
    from usmis.ingest import sources
    from usmis.ingest.channels.files import load_file

    from .test_file_mapping import _file, euro_row

    with transaction(engine) as conn:
        sources.add_source(conn, source_id="pharm_europharma", name="Europharma", kind="pharmacy",
                           channels=["file"], formats=["csv"])
        src = sources.get(conn, "pharm_europharma")
    path = tmp_path / "pharm_europharma.csv"
    path.write_bytes(_file(
        euro_row(),
        euro_row(ID_ОТПУСКА="D2", ДАТА_ОТПУСКА="31.02.20X4"),
        euro_row(ID_ОТПУСКА="D3", КАРТА_ПАЦИЕНТА="K78"),
        euro_row(ID_ОТПУСКА="D1", СТАТУС="corrected", КОЛ_ВО="30"),  # a later correction
    ))
    receipt = load_file(engine, settings, src, path)
    assert (receipt.records, receipt.new) == (4, 4)
    assert load_file(engine, settings, src, path).new == 0  # the same file again: nothing new
    result = Pipeline(settings, engine).drain()
    assert (result.done, result.dead) == (3, 1)
    assert _count(engine, "Patient") == 2
    dispenses = {d["identifier"][0]["value"]: d for d in
                 _resources(engine, settings, "MedicationDispense")}
    assert sorted(dispenses) == ["D1", "D3"]
    assert dispenses["D1"]["quantity"]["value"] == 30
    with engine.connect() as conn:
        (dl,) = deadletters.list_letters(conn)
        shown = deadletters.show(conn, settings, dl["id"])
    assert (dl["rule"], dl["field"], dl["message_id"]) == (
        "date-format", "ДАТА_ОТПУСКА", "pharm_europharma.csv:3")
    assert "31.02.20X4" in shown["content"]


def test_hl7_batch_files_take_the_same_mapping(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    from pathlib import Path

    from usmis.ingest import sources
    from usmis.ingest.channels.files import load_file

    fixtures = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
    with engine.connect() as conn:
        src = sources.get(conn, "his-test")
    framed = load_file(engine, settings, src, fixtures / "batch_mllp.hl7")
    assert (framed.records, framed.new, framed.rejected) == (4, 4, 1)
    lines = load_file(engine, settings, src, fixtures / "batch_lines.hl7")
    assert lines.records == 4
    assert lines.new == 0  # the same messages, only framed differently: already in the inbox
    result = Pipeline(settings, engine).drain()
    assert result.done == 3
    (enc,) = _resources(engine, settings, "Encounter")
    assert enc["status"] == "finished"  # the A03 discharged the A01's stay
    with engine.connect() as conn:
        (dl,) = deadletters.list_letters(conn)
    assert (dl["rule"], dl["field"], dl["message_id"]) == ("date-format", "PID-7", "F-BAD")


def test_a_failure_while_linking_costs_one_message(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    """Linking runs at the end of the batch; if it fails (a bug, not the database), the batch
    runs again message by message and only the failing message becomes a dead letter."""
    ids = [_put(engine, settings, make_adt(control=f"K{i}", patient=f"PK{i}")) for i in range(3)]
    pipeline = Pipeline(settings, engine)
    real_link = pipeline.link
    assert real_link is not None

    def link(conn: Any, s: Settings, patient_id: str, resource: Any = None) -> str:
        patient = FhirService(conn, keys(s)).read("Patient", patient_id)
        if any(i["value"] == "PK0" for i in patient["identifier"]):
            raise ValueError("linker bug")  # this one Patient breaks the linker
        return real_link(conn, s, patient_id, resource=resource)

    pipeline.link = link
    result = pipeline.drain()
    assert (result.done, result.dead) == (2, 1)
    with engine.connect() as conn:
        (dl,) = deadletters.list_letters(conn)
        linked = conn.execute(select(func.count()).select_from(mpi_tables.link)).scalar_one()
    assert (dl["inbox_id"], dl["rule"]) == (ids[0], "internal")
    assert _count(engine, "Patient") == 2
    assert linked == 2


def _put_fhir(engine: Engine, settings: Settings, doc: dict[str, Any], control: str) -> int:
    with transaction(engine) as conn:
        return inbox.receive(conn, settings, Incoming(
            source_id="emr-test", channel="rest", format="fhir", message_id=control,
            raw=orjson.dumps(doc))).inbox_id


def _emr(engine: Engine) -> str:
    with transaction(engine) as conn:
        sources.add_source(conn, source_id="emr-test", name="Test EMR", kind="polyclinic",
                           channels=["rest"], formats=["fhir"])
    return "https://usmis.kz/sid/source/emr-test/patient"


def test_a_batch_finds_a_record_by_any_identifier_an_earlier_message_gave_it(
    engine: Engine, settings: Settings
) -> None:
    """The batch answers its conditional keys from one lookup kept up to date as it writes:
    a record stored with two of the source's numbers is found by the second one by a later
    message of the same batch (its index rows are not written yet) — updated, not doubled."""
    system = _emr(engine)
    _put_fhir(engine, settings, {"resourceType": "Patient", "name": [{"family": "Бірінші"}],
                                 "identifier": [{"system": system, "value": "X1"},
                                                {"system": system, "value": "Y1"}]}, "m1")
    _put_fhir(engine, settings, {"resourceType": "Patient", "name": [{"family": "Екінші"}],
                                 "identifier": [{"system": system, "value": "Y1"}]}, "m2")
    result = Pipeline(settings, engine).run_batch(50)
    assert (result.claimed, result.done, result.dead) == (2, 2, 0)
    (patient,) = _resources(engine, settings, "Patient")
    assert patient["name"][0]["family"] == "Екінші"


def test_care_projections_of_a_batch_are_written_with_it(
    engine: Engine, settings: Settings
) -> None:
    """Creates' care links and consent rules wait with the batch's index rows and are
    written at its end; an update later in the same batch replaces what it projected."""
    system = _emr(engine)
    pat = {"resourceType": "Patient", "identifier": [{"system": system, "value": "C1"}],
           "managingOrganization": {"reference": "Organization/org-a"}}
    enc = {"resourceType": "Encounter", "status": "finished", "class": {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "identifier": [{"system": system.replace("patient", "encounter"), "value": "E1"}],
        "subject": {"reference": "urn:uuid:7c0e2a4e-3f7e-4d1c-9d3a-2b1f00000001"},
        "serviceProvider": {"reference": "Organization/org-b"},
        "period": {"start": "2025-05-01T10:00:00+05:00"}}

    def bundle(encounter: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:7c0e2a4e-3f7e-4d1c-9d3a-2b1f00000001", "resource": pat},
            {"resource": encounter}]}

    _put_fhir(engine, settings, pat, "c1")
    _put_fhir(engine, settings, bundle(enc), "c2")
    _put_fhir(engine, settings, bundle(
        {**enc, "serviceProvider": {"reference": "Organization/org-c"}}), "c3")
    result = Pipeline(settings, engine).run_batch(50)
    assert (result.done, result.dead) == (3, 0), result.reasons
    (patient,) = _resources(engine, settings, "Patient")
    (encounter,) = _resources(engine, settings, "Encounter")
    with engine.connect() as c:
        links = {(r.resource_type, r.resource_id, r.patient_id, r.organization_id, r.kind)
                 for r in c.execute(select(access_tables.care_link))}
    assert links == {("Patient", patient["id"], patient["id"], "org-a", "attachment"),
                     ("Encounter", encounter["id"], patient["id"], "org-c", "encounter")}


def test_a_record_another_batch_is_writing_is_left_for_later_not_waited_for(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    """PostgreSQL workers take a batch's record locks without waiting: a message whose
    record another transaction holds stays pending (the rest of the batch goes on), and a
    batch of nothing else is reported busy, untouched."""
    if settings.is_sqlite:
        pytest.skip("one writer on SQLite: batches never overlap")
    held_id = _put(engine, settings, make_adt(control="H1", patient="PH1"))
    free_id = _put(engine, settings, make_adt(control="F1", patient="PF1"))
    key = "Patient?identifier=https://usmis.kz/sid/source/his-test/patient|PH1"
    pipeline = Pipeline(settings, engine)
    with engine.connect() as other:
        tx = other.begin()
        lock_keys(other, [key])  # another worker's batch writing patient PH1
        first = pipeline.run_batch(50)
        assert (first.claimed, first.done, first.busy) == (1, 1, False)
        again = pipeline.run_batch(50)
        assert (again.claimed, again.busy) == (0, True)
        tx.rollback()
    assert pipeline.run_batch(50).done == 1
    with engine.connect() as c:
        order = [r.id for r in c.execute(select(t.inbox.c.id).order_by(t.inbox.c.processed_at))]
    assert order == [free_id, held_id]
    assert _count(engine, "Patient") == 2


def test_a_merge_waits_for_the_batch_writing_the_patient_it_merges_away(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    """An A40 updates the merged Patient while linking, under the linking lock; it takes
    that Patient's record lock with its batch's, so it never waits for a row of a batch
    that will wait for the linking lock (the deadlock seen twice a 100,000-people load)."""
    if settings.is_sqlite:
        pytest.skip("one writer on SQLite: batches never overlap")
    _put(engine, settings, make_adt(trigger="A08", control="M0", patient="P099"))
    Pipeline(settings, engine).drain()
    _put(engine, settings, make_adt(trigger="A40", control="M1", patient="P100", merged="P099"))
    key = "Patient?identifier=https://usmis.kz/sid/source/his-test/patient|P099"
    pipeline = Pipeline(settings, engine)
    with engine.connect() as other:
        tx = other.begin()
        lock_keys(other, [key])  # another worker's batch writing patient P099
        assert pipeline.run_batch(50).busy  # the merge is left for later
        tx.rollback()
    assert pipeline.run_batch(50).done == 1
    patients = {p["identifier"][0]["value"]: p for p in _resources(engine, settings, "Patient")}
    assert patients["P099"]["active"] is False


@pytest.mark.parametrize("order", ["newer-first", "older-first"])
def test_in_one_batch_the_later_event_wins_whatever_the_order(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings, order: str
) -> None:
    """A batch reads its records' clocks once and moves them in memory as its messages are
    stored: two states of one record in the same batch end as the later event, and a
    later batch still sees the clock the first one wrote."""
    newer = make_adt(trigger="A08", control="N", family="Жаңа", event_time="20240305100000")
    older = make_adt(trigger="A08", control="O", family="Ескі", event_time="20240301100000")
    for raw in ([newer, older] if order == "newer-first" else [older, newer]):
        _put(engine, settings, raw)
    assert Pipeline(settings, engine).run_batch(50).done == 2
    (patient,) = _resources(engine, settings, "Patient")
    assert patient["name"][0]["family"] == "Жаңа"
    _put(engine, settings, make_adt(trigger="A08", control="O2", family="Ескі",
                                    event_time="20240302100000"))
    assert Pipeline(settings, engine).run_batch(50).done == 1
    (patient,) = _resources(engine, settings, "Patient")
    assert patient["name"][0]["family"] == "Жаңа"
