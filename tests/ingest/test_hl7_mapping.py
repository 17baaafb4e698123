"""HL7 v2 → FHIR mapping (pure; no database)."""

from __future__ import annotations

import uuid

import hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usmis.ingest.mapping import common, hl7v2
from usmis.ingest.mapping.common import IIN_SYSTEM, Reject

from .factories import make_adt, make_iin, make_oru


def _by_type(bundle: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in bundle["entry"]:
        out.setdefault(e["resource"]["resourceType"], []).append(e)
    return out


def test_adt_a01_maps_patient_encounter_condition_with_conditional_puts() -> None:
    iin = make_iin()
    m = hl7v2.map_message(make_adt(iin=iin).encode(), "his-test")
    entries = _by_type(m.bundle)
    assert m.bundle["type"] == "transaction"
    pat = entries["Patient"][0]
    assert pat["request"] == {
        "method": "PUT",
        "url": "Patient?identifier=https://usmis.kz/sid/source/his-test/patient|P100",
    }
    assert {"use": "official", "system": IIN_SYSTEM, "value": iin} in pat["resource"]["identifier"]
    assert pat["resource"]["birthDate"] == "1987-01-01"
    enc = entries["Encounter"][0]["resource"]
    assert enc["status"] == "in-progress"
    assert enc["class"]["code"] == "IMP"
    assert enc["subject"]["reference"] == pat["fullUrl"]
    assert enc["period"]["start"].startswith("2024-03-01T10:00:00")
    cond = entries["Condition"][0]["resource"]
    assert cond["code"]["coding"][0]["code"] == "I10"
    assert m.iin_status == "valid"
    assert m.message_id == "MSG0001"
    assert m.event_time is not None
    assert m.event_time.hour == 10


def test_mapping_is_deterministic_so_replays_are_identical() -> None:
    raw = make_adt().encode()
    assert hl7v2.map_message(raw, "s").bundle == hl7v2.map_message(raw, "s").bundle


@pytest.mark.parametrize(
    ("trigger", "status", "klass"),
    [("A01", "in-progress", "IMP"), ("A03", "finished", "IMP"), ("A04", "finished", "AMB")],
)
def test_adt_events_set_encounter_status(trigger: str, status: str, klass: str) -> None:
    pclass = "O" if trigger == "A04" else "I"
    raw = make_adt(trigger=trigger, patient_class=pclass, discharge="20240305120000").encode()
    enc = _by_type(hl7v2.map_message(raw, "s").bundle)["Encounter"][0]["resource"]
    assert (enc["status"], enc["class"]["code"]) == (status, klass)


def test_a08_updates_patient_only_and_iin_missing_is_counted() -> None:
    m = hl7v2.map_message(make_adt(trigger="A08").encode(), "s")
    assert list(_by_type(m.bundle)) == ["Patient"]
    assert m.iin_status == "missing"


def test_a40_records_the_merge() -> None:
    m = hl7v2.map_message(make_adt(trigger="A40", merged="P099").encode(), "s")
    assert m.merges == [("P100", "P099")]
    link = m.bundle["entry"][0]["resource"]["link"][0]
    assert link["type"] == "replaces"
    assert link["other"]["identifier"]["value"] == "P099"


def test_oru_r01_maps_report_and_observations() -> None:
    m = hl7v2.map_message(make_oru().encode(), "lis-test")
    entries = _by_type(m.bundle)
    report = entries["DiagnosticReport"][0]["resource"]
    obs = [e["resource"] for e in entries["Observation"]]
    assert len(obs) == 2
    assert obs[0]["valueQuantity"] == {
        "value": 5.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    assert obs[0]["code"]["coding"][0] == {"system": "http://loinc.org", "code": "2345-7",
                                           "display": "Glucose"}
    assert [r["reference"] for r in report["result"]] == [
        e["fullUrl"] for e in entries["Observation"]]


@pytest.mark.parametrize(
    ("raw", "rule", "field", "ack"),
    [
        (make_adt(birth="19871301"), "date-format", "PID-7", "AE"),
        (make_adt(sex="X"), "code", "PID-8", "AE"),
        (make_adt(version="2.8"), "version", "MSH-12", "AR"),
        (make_adt(trigger="A99"), "message-type", "MSH-9", "AR"),
        (make_adt(patient=""), "required", "PID-3", "AE"),
        (make_adt(visit=""), "required", "PV1-19", "AE"),
        (make_adt(diagnosis="XYZ"), "code", "DG1-3", "AE"),
        (make_oru(value="high"), "data-type", "OBX-5", "AE"),
        ("garbage", "structure", "MSH", "AR"),
    ],
)
def test_malformed_messages_are_rejected_with_rule_and_field(
    raw: str, rule: str, field: str, ack: str
) -> None:
    with pytest.raises(Reject) as err:
        hl7v2.map_message(raw.encode(), "s")
    assert (err.value.rule, err.value.field, err.value.ack) == (rule, field, ack)


def test_personal_values_never_appear_in_reject_details() -> None:
    with pytest.raises(Reject) as err:
        hl7v2.map_message(make_adt(birth="19871301").encode(), "s")
    assert "1987" not in str(err.value)


def test_bad_encoding_is_refused() -> None:
    raw = make_adt().encode("cp1251")
    with pytest.raises(Reject) as err:
        hl7v2.map_message(raw, "s")
    assert (err.value.rule, err.value.field) == ("encoding", "MSH-18")
    # declared cp1251: accepted
    raw = make_adt().replace("|P|2.5", "|P|2.5" + "|" * 6 + "CP1251").encode("cp1251")
    assert hl7v2.map_message(raw, "s").message_id == "MSG0001"


def test_ack_err_segment_names_segment_and_field() -> None:
    raw = make_adt(birth="19871301").encode()
    header = hl7v2.read_header(raw)
    with pytest.raises(Reject) as err:
        hl7v2.map_message(raw, "s")
    ack = hl7v2.ack(header, "AE", err.value).decode()
    segs = ack.strip("\r").split("\r")
    assert segs[1].startswith("MSA|AE|MSG0001")
    assert segs[2].startswith("ERR|PID^1^7^102&Data type error&HL70357|PID^1^7|102^")


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5.1"])
def test_versions_2_3_to_2_5_map_alike_and_are_answered_in_their_version(version: str) -> None:
    iin = make_iin()
    for make in (lambda **k: make_adt(iin=iin, **k), make_oru):
        ours = hl7v2.map_message(make(version=version).encode(), "s")
        assert ours.bundle == hl7v2.map_message(make(version="2.5").encode(), "s").bundle
    raw = make_adt(birth="19871301", version=version).encode()
    with pytest.raises(Reject) as err:
        hl7v2.map_message(raw, "s")
    segs = hl7v2.ack(hl7v2.read_header(raw), "AE", err.value).decode().strip("\r").split("\r")
    assert segs[0].endswith(f"|P|{version}")
    assert segs[2].startswith("ERR|PID^1^7^102&")  # ERR-1, which v2.3 and v2.4 read


def test_batch_files_split_framed_and_newline_separated() -> None:
    a, b = make_adt(control="A"), make_adt(control="B")
    framed = b"".join(b"\x0b" + m.encode() + b"\x1c\r" for m in (a, b))
    assert [hl7v2.read_header(m).control_id for m in hl7v2.split_messages(framed)] == ["A", "B"]
    lines = (a.replace("\r", "\n") + "\n\n" + b.replace("\r", "\r\n")).encode()
    assert [hl7v2.read_header(m).control_id for m in hl7v2.split_messages(lines)] == ["A", "B"]


# The mapping splits segments into field strings itself (the library parses the header):
# they must be the strings the library's parse of the whole message gives back.
_ANY_CHARS = st.text(st.sampled_from(list("AZ09 .-_|^~\\&#") + ["ё", "Қ", "\t"]), max_size=30)


@settings(max_examples=300, deadline=None)
@given(header=_ANY_CHARS, body=st.lists(_ANY_CHARS, max_size=6),
       seps=st.sampled_from(["|^~\\&", "|^~\\&#", "#^~\\&", "|!~\\&", "|^~\\"]))
def test_field_strings_equal_the_librarys_parse(header: str, body: list[str], seps: str) -> None:
    fs = seps[0]
    text = "\r".join([f"MSH{seps}{fs}APP{fs}{header}"]
                     + [f"{'OBX' if i % 2 else 'PID'}{fs}{b}" for i, b in enumerate(body)]
                     + (["ZZZ"] if body else [])).strip()
    ours = hl7v2.Message(text)
    theirs = hl7.parse(text)
    assert ours.segments == [[str(f) for f in seg] for seg in theirs]
    assert (ours.rep, ours.comp) == (theirs.separators[2], theirs.separators[3])
    assert [ours.unescape(v) for v in body] == [str(theirs.unescape(v)) for v in body]


@given(st.text(), st.text())
@settings(max_examples=300)
def test_full_url_is_the_rfc_4122_name_based_uuid(system: str, value: str) -> None:
    # full_url builds the UUID by hand (speed): it must be exactly uuid5's.
    want = uuid.uuid5(common._NS, system + "|" + value)
    assert common.full_url(system, value) == f"urn:uuid:{want}"


def test_clinical_times_are_kept_and_still_rejected_when_invalid() -> None:
    first = common.hl7_datetime("20240301101500", "OBX-14")
    assert common.hl7_datetime("20240301101500", "OBR-7") is first  # the kept answer
    assert first[0].startswith("2024-03-01T10:15:00")
    for bad in ("20240230", "2024x"):
        for _ in range(2):  # an invalid time is never kept: rejected every time, by field
            with pytest.raises(Reject) as exc:
                common.hl7_datetime(bad, "PV1-44")
            assert exc.value.field == "PV1-44"
    common.hl7_datetime("19800101", "PID-7", personal=True)
    assert "19800101" not in common._SEEN_TS  # a birth date is not kept
