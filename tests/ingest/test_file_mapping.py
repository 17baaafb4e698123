"""The declarative file-mapping engine (pure) and the packaged mapping of every file source."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usmis.ingest.mapping import files
from usmis.ingest.mapping.common import IIN_SYSTEM, Reject

from .factories import make_iin

EURO_HEADER = ("ID_ОТПУСКА;БИН_АПТЕКИ;КАРТА_ПАЦИЕНТА;ИИН;ФИО;ДАТА_РОЖДЕНИЯ;ПОЛ;ИСТОЧНИК_РЕЦЕПТА;"
               "НОМЕР_РЕЦЕПТА;ВРАЧ;КОД_АТХ;ПРЕПАРАТ;КОЛ_ВО;ДНЕЙ;ДАТА_ОТПУСКА;ЦЕНА;СУММА;СТАТУС")


def euro_row(**over: str) -> str:
    values = {
        "ID_ОТПУСКА": "D1", "БИН_АПТЕКИ": "990340000123", "КАРТА_ПАЦИЕНТА": "K77",
        "ИИН": make_iin(), "ФИО": "Тестова Анна Ивановна", "ДАТА_РОЖДЕНИЯ": "02.02.1990",
        "ПОЛ": "ж", "ИСТОЧНИК_РЕЦЕПТА": "ehr_damumed", "НОМЕР_РЕЦЕПТА": "RX1", "ВРАЧ": "PR1",
        "КОД_АТХ": "A10BA02", "ПРЕПАРАТ": "Метформин", "КОЛ_ВО": "60", "ДНЕЙ": "30",
        "ДАТА_ОТПУСКА": "05.03.2024", "ЦЕНА": "12,50", "СУММА": "750,00", "СТАТУС": "dispensed",
    }
    values.update(over)
    return ";".join(values[c] for c in EURO_HEADER.split(";"))


def _file(*rows: str) -> bytes:
    return "\r\n".join([EURO_HEADER, *rows]).encode("cp1251") + b"\r\n"


def test_every_packaged_mapping_loads() -> None:
    names = sorted(p.stem for p in files.SOURCES_DIR.glob("*.toml"))
    assert len(names) >= 18
    for name in names:
        m = files.load_mapping(name)
        assert m.resources, name


def test_cp1251_csv_row_maps_to_patient_and_dispense() -> None:
    m = files.load_mapping("pharm_europharma")
    header, rows = files.split_file(_file(euro_row()), m)
    assert header is not None
    assert [n for n, _ in rows] == [2]
    out = files.map_row(rows[0][1], header, m, "pharm_europharma")
    by_type = {e["resource"]["resourceType"]: e for e in out.bundle["entry"]}
    patient, dispense = by_type["Patient"], by_type["MedicationDispense"]
    assert patient["request"]["method"] == "POST"  # mode = create: a mention, not the master
    assert patient["resource"]["gender"] == "female"
    assert patient["resource"]["birthDate"] == "1990-02-02"
    assert patient["resource"]["name"][0]["family"] == "Тестова"
    assert {"use": "official", "system": IIN_SYSTEM, "value": make_iin()} in patient[
        "resource"]["identifier"]
    d = dispense["resource"]
    assert dispense["request"]["url"].startswith(
        "MedicationDispense?identifier=https://usmis.kz/sid/source/pharm_europharma/dispense|")
    assert d["subject"] == {"reference": patient["fullUrl"]}
    assert d["quantity"] == {"value": 60}
    assert d["whenHandedOver"] == "2024-03-05"
    assert d["authorizingPrescription"][0]["identifier"]["system"] == (
        "https://usmis.kz/sid/source/ehr_damumed/prescription")
    price = next(x for x in d["extension"] if x["url"].endswith("unit-price"))
    assert price["valueMoney"]["value"] == 12.5
    assert out.iin_status == "valid"
    assert out.message_id == "D1"


def test_empty_optional_columns_drop_their_elements() -> None:
    m = files.load_mapping("pharm_europharma")
    header, rows = files.split_file(_file(euro_row(ИИН="", ДНЕЙ="")), m)
    out = files.map_row(rows[0][1], header, m, "pharm_europharma")
    patient = out.bundle["entry"][0]["resource"]
    assert all(i["system"] != IIN_SYSTEM for i in patient["identifier"])
    assert "daysSupply" not in out.bundle["entry"][1]["resource"]
    assert out.iin_status == "missing"


@pytest.mark.parametrize(
    ("raw", "rule", "field"),
    [
        (euro_row(ДАТА_ОТПУСКА="31.02.20X4").encode("cp1251"), "date-format", "ДАТА_ОТПУСКА"),
        (euro_row(ПОЛ="x").encode("cp1251"), "code", "ПОЛ"),
        (euro_row(КОЛ_ВО="много").encode("cp1251"), "number-format", "КОЛ_ВО"),
        (euro_row(КОД_АТХ="").encode("cp1251"), "required", "КОД_АТХ"),
        (";".join(euro_row().split(";")[:-3]).encode("cp1251"), "column-count", "row"),
        (euro_row().encode("cp1251").replace(b"K77", b"\x98\x98"), "encoding", "row"),
    ],
)
def test_bad_rows_are_rejected_with_rule_and_column(raw: bytes, rule: str, field: str) -> None:
    m = files.load_mapping("pharm_europharma")
    with pytest.raises(Reject) as err:
        files.map_row(raw, EURO_HEADER.split(";"), m, "pharm_europharma")
    assert (err.value.rule, err.value.field) == (rule, field)


def test_personal_columns_never_show_their_values() -> None:
    m = files.load_mapping("pharm_europharma")
    with pytest.raises(Reject) as err:
        files.map_row(euro_row(ДАТА_РОЖДЕНИЯ="99.99.1990").encode("cp1251"),
                      EURO_HEADER.split(";"), m, "pharm_europharma")
    assert "1990" not in str(err.value)
    with pytest.raises(Reject) as err:
        files.map_row(euro_row(ДАТА_ОТПУСКА="99.99.2024").encode("cp1251"),
                      EURO_HEADER.split(";"), m, "pharm_europharma")
    assert "99.99.2024" in str(err.value)  # not personal: the operator sees the value


def test_ndjson_and_quoted_multiline_csv_are_split_into_records() -> None:
    m = files.parse_mapping({"read": {"format": "csv"}, "resource": [
        {"type": "Organization", "key": "$id", "body": {"name": "$name"}}]}, "x")
    header, rows = files.split_file(b'id,name\n1,"two\nlines"\n2,plain\n', m)
    assert header == ["id", "name"]
    assert [n for n, _ in rows] == [2, 4]
    out = files.map_row(rows[0][1], header, m, "x")
    assert out.bundle["entry"][0]["resource"]["name"] == "two\nlines"
    # quotes in a quoted field, and a multi-line one with an escaped quote
    header, rows = files.split_file(b'id,name\n1,"a ""b"", c"\n2,"x\n""y""\nz"\n3,w\n', m)
    assert [n for n, _ in rows] == [2, 3, 6]
    assert files.map_row(rows[1][1], header, m, "x").bundle["entry"][0]["resource"][
        "name"] == 'x\n"y"\nz'
    nd = files.parse_mapping({"read": {"format": "ndjson"}, "resource": [
        {"type": "Organization", "key": "$id", "body": {"name": "$name"}}]}, "x")
    _, rows = files.split_file(b'{"id": "a", "name": "A"}\n\n{"id": "b"}\n', nd)
    assert [n for n, _ in rows] == [1, 3]


def test_a_new_source_is_one_mapping_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "clinic_new.toml"
    path.write_text('''
[read]
format = "csv"
delimiter = "|"
date_formats = ["%m/%d/%Y"]
[row]
id = "$visit"
[maps.kind]
"amb" = "AMB"
[[resource]]
name = "p"
type = "Patient"
key = "$pat"
mode = "create"
[[resource]]
type = "Encounter"
kind = "encounter"
key = "$visit"
[resource.body]
status = "finished"
class = { system = "http://terminology.hl7.org/CodeSystem/v3-ActCode", code = "$kind|map:kind" }
subject = "@p"
period = { start = "$day|date" }
''', encoding="utf-8")
    m = files.load_mapping(str(path), "clinic_new")
    header, rows = files.split_file(b"visit|pat|kind|day\nV1|P1|amb|03/15/2024\n", m)
    out = files.map_row(rows[0][1], header, m, "clinic_new")
    enc = out.bundle["entry"][1]["resource"]
    assert enc["period"] == {"start": "2024-03-15"}
    assert enc["class"]["code"] == "AMB"


def test_every_file_source_of_the_nation_has_a_mapping_using_only_its_columns() -> None:
    """The synthetic nation describes each extract's columns; each mapping must use exactly
    columns that exist (a typo would turn every row into a dead letter)."""
    import re

    from usmis.synth.sources import SOURCES

    file_sources = [s for s in SOURCES if s.channel == "file"]
    assert len(file_sources) >= 18
    for s in file_sources:
        path = files.SOURCES_DIR / f"{s.id}.toml"
        assert path.exists(), s.id
        columns = {c for c, _, _ in s.columns}
        used = set(re.findall(r'\$([^|"}\s]+)', path.read_text(encoding="utf-8")))
        assert used <= columns, (s.id, used - columns)
        m = files.load_mapping(s.id)
        assert m.encoding.lower().replace("-", "") == s.encoding.replace("-", ""), s.id
        assert m.format == s.format, s.id


def test_templates_compile_once_and_render_each_row_fresh() -> None:
    """Compiled templates keep the mapping language's rules: a static object is a new copy
    per row, a text with an empty ``{$…}`` is dropped, an object whose dynamic parts are all
    empty is dropped (a static one stays), ``@name`` needs that resource in the row."""
    m = files.parse_mapping({
        "read": {"format": "csv", "date_formats": ["%d.%m.%Y"]},
        "row": {"id": "$id|required"},
        "resource": [{
            "name": "p", "type": "Patient", "key": "$id",
            "body": {
                "maritalStatus": {"coding": [{"system": "urn:t", "code": "U"}]},
                "text": {"status": "generated", "div": "<div>{$note|upper} {source}</div>"},
                "telecom": [{"system": "phone", "value": "$tel"}],
                "birthDate": "$born|date",
                "managingOrganization": "@org",
            },
        }],
    }, "clinic_x")
    header = ["id", "note", "tel", "born"]

    def row(*values: str) -> dict[str, object]:
        out = files.map_row(",".join(values).encode(), header, m, "clinic_x")
        resource: dict[str, object] = out.bundle["entry"][0]["resource"]
        return resource

    first = row("A1", "ok", "", "02.03.2001")
    assert first["text"] == {"status": "generated", "div": "<div>OK clinic_x</div>"}
    assert "telecom" not in first
    assert "managingOrganization" not in first
    assert first["birthDate"] == "2001-03-02"
    first["maritalStatus"]["coding"].append({"code": "M"})  # type: ignore[index]
    second = row("A2", "", "+77010000000", "02.03.2001")
    assert second["maritalStatus"] == {"coding": [{"system": "urn:t", "code": "U"}]}
    assert "text" not in second  # its only dynamic part came out empty
    assert second["telecom"] == [{"system": "phone", "value": "+77010000000"}]
    with pytest.raises(Reject) as err:
        row("A3", "", "", "02.03.1700")  # the same date text, now cached, still checked
    assert (err.value.rule, err.value.field) == ("date-range", "born")
    with pytest.raises(Reject) as err:
        row("", "x", "", "")
    assert (err.value.rule, err.value.field) == ("required", "id")


@given(st.lists(st.sampled_from(["ok", 'Ivan"ov', '"open', 'x"', '""', '"a""b"']),
                min_size=1, max_size=8), st.integers(0, 7))
def test_a_stray_quote_never_takes_the_rows_after_it(values: list[str], bad: int) -> None:
    """One row with a quote out of place stays one record: every other line is its own
    row (a quote counted as opening a field swallowed the rest of the file)."""
    m = files.parse_mapping({"read": {"format": "csv"}, "resource": [
        {"type": "Organization", "key": "$id", "body": {"name": "$name"}}]}, "x")
    lines = [f"{i},plain{i}" for i in range(8)]
    lines[bad] = f"{bad}," + "".join(values)
    header, rows = files.split_file(("id,name\n" + "\n".join(lines) + "\n").encode(), m)
    numbers = [n for n, _ in rows]
    good = [i + 2 for i in range(8) if i != bad]
    assert set(good) <= set(numbers)  # every good line is a row that starts on its line
    for n, raw in rows:
        if n != bad + 2:
            assert raw == lines[n - 2].encode()


def test_an_unclosed_quote_is_one_dead_row_and_the_file_goes_on() -> None:
    m = files.parse_mapping({"read": {"format": "csv"}, "resource": [
        {"type": "Organization", "key": "$id", "body": {"name": "$name"}}]}, "x")
    body = b'id,name\n1,"never closed\n' + b"".join(b"%d,n%d\n" % (i, i) for i in range(2, 80))
    header, rows = files.split_file(body, m)
    assert [n for n, _ in rows] == list(range(2, 81))
    assert rows[0][1] == b'1,"never closed'
    assert files.map_row(rows[5][1], header, m, "x").bundle["entry"][0]["resource"][
        "name"] == "n6"
