"""IIN trust, comparison levels and blocking of the pure matching model."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usmis.mpi.iin import is_valid_iin
from usmis.mpi.model import (
    NULL,
    blocking_keys,
    compare,
    compare_birth,
    iin_deterministic,
    iin_status,
    make_record,
    parse_birth,
    record_from_patient,
)

from .factories import make_iin, never_issued_prefix

BIRTH = date(1985, 3, 14)


def test_valid_iin_agreeing_with_the_record_is_trusted() -> None:
    iin = make_iin(BIRTH, "F")
    assert is_valid_iin(iin)
    assert iin_status(iin, (1985, 3, 14), "F") == "valid"
    # Nothing to compare with is not a contradiction, and nothing is derived.
    assert iin_status(iin, None, "") == "valid"


@pytest.mark.parametrize(
    ("birth", "sex", "why"),
    [
        ((1986, 3, 14), "F", "birth year contradicts"),
        ((1985, 3, 14), "M", "sex contradicts"),
        ((2085, 3, 14), "F", "century contradicts"),
    ],
)
def test_valid_iin_contradicting_the_record_is_suspect(
    birth: tuple[int, int, int], sex: str, why: str
) -> None:
    assert iin_status(make_iin(BIRTH, "F"), birth, sex) == "suspect", why


def test_day_month_in_the_iin_are_not_checked() -> None:
    # Only year and sex are a consistency signal; a swapped day/month is a record typo.
    assert iin_status(make_iin(BIRTH, "F"), (1985, 14, 3), "F") == "valid"


def test_invalid_and_never_issued_iins() -> None:
    good = make_iin(BIRTH, "M")
    typo = good[:-1] + str((int(good[-1]) + 1) % 10)
    assert iin_status(typo, None, "") == "invalid"
    prefix = never_issued_prefix()
    for last in "0123456789":
        assert not is_valid_iin(prefix + last)
        assert iin_status(prefix + last, None, "") == "invalid"
    assert iin_status("12345", None, "") == "invalid"
    assert iin_status("", None, "") == "missing"
    assert make_record("r", iin="85-03-14").iin_status == "invalid"


def test_record_repr_masks_personal_values() -> None:
    r = make_record("Patient/1", given="Жанна", surname="Нурланова", iin=make_iin(BIRTH, "F"))
    assert "Жанна" not in repr(r)
    assert "jana" not in repr(r)
    assert r.iin not in repr(r)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1985-03-14", (1985, 3, 14)),
        ("19850314", (1985, 3, 14)),
        ("14.03.1985", (1985, 3, 14)),
        ("1985-03", None),
        ("12.31.1985", (1985, 31, 12)),
        ("32.13.1985", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_parse_birth(text: str | None, expected: tuple[int, int, int] | None) -> None:
    assert parse_birth(text) == expected


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ((1985, 3, 14), (1985, 3, 14), 3),
        ((1985, 3, 4), (1985, 4, 3), 2),
        ((1985, 3, 14), (1985, 3, 15), 1),
        ((1985, 3, 14), (1958, 3, 14), 1),
        ((1985, 3, 14), (1991, 7, 2), 0),
        ((1985, 3, 14), None, NULL),
    ],
)
def test_birth_levels(a: tuple[int, int, int], b: tuple[int, int, int] | None, level: int) -> None:
    assert compare_birth(a, b) == level


def _register(**kw: str) -> dict[str, str]:
    base = {
        "given": "Жанна",
        "surname": "Нұрланова",
        "patronymic": "Сәрсенбайқызы",
        "birth_date": "1985-03-14",
        "sex": "female",
        "iin": make_iin(BIRTH, "F"),
        "phone": "+7 701 555 0101",
        "locality": "Алматы",
    }
    base.update(kw)
    return base


def test_the_four_spellings_of_the_issue_compare_as_one_woman() -> None:
    register = make_record("reg", **_register())
    hospital = make_record("his", **_register(given="Zhanna", surname="Nurlanova", iin=""))
    iin = register.iin
    lab = make_record("lab", **_register(given="Janna", surname="Nurlanova",
                                         iin=iin[:3] + iin[4] + iin[3] + iin[5:]))  # fmt: skip
    pharmacy = make_record(
        "ph", **_register(surname="Нурланова", patronymic="Сарсенбаевна", iin="")
    )
    for other in (hospital, lab, pharmacy):
        g = compare(register, other)
        assert g[:4] == (3, 3, 2, 3), other.key
    assert compare(register, lab)[5] in (1, NULL)  # a transposed IIN is not an agreement


def test_deterministic_rule_refuses_a_valid_iin_of_someone_else() -> None:
    owner = make_record("a", **_register())
    stranger = make_record(
        "b", **_register(given="Бауыржан", surname="Ахметов", patronymic="Серікұлы",
                         sex="male", birth_date="1970-01-01", iin=owner.iin)
    )  # fmt: skip
    assert stranger.iin_status == "suspect"
    gamma = compare(owner, stranger)
    assert gamma[5] == NULL  # a suspect IIN is no evidence
    assert not iin_deterministic(owner, stranger, gamma)
    same = make_record("c", **_register(given="Zhanna", surname="Nurlanova"))
    assert iin_deterministic(owner, same, compare(owner, same))


def test_blocking_survives_single_errors() -> None:
    base = make_record("a", **_register())
    variants = [
        make_record("b", **_register(surname="Ахметова", iin="")),  # married, no IIN
        make_record("c", **_register(given="Жана", iin="")),  # typo in the given name
        make_record("d", **_register(birth_date="1985-14-03", iin="", phone="")),  # invalid
        make_record("e", **_register(birth_date="1986-03-14", iin="", phone="")),  # year typo
    ]
    keys = set(blocking_keys(base))
    for v in variants:
        assert keys & set(blocking_keys(v)), v.key


def test_record_from_fhir_patient() -> None:
    iin = make_iin(BIRTH, "F")
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {"system": "https://usmis.kz/sid/source/his-01/patient", "value": "42"},
            {"system": "https://usmis.kz/sid/iin", "value": iin},
        ],
        "name": [{"use": "official", "family": "Нұрланова", "given": ["Жанна", "Сәрсенбайқызы"]}],
        "gender": "female",
        "birthDate": "1985-03-14",
        "telecom": [{"system": "phone", "value": "+77015550101"}],
        "address": [{"city": "Алматы", "line": ["ул. Абая 10"]}],
    }
    r = record_from_patient("p1", patient)
    assert r.source_id == "his-01"
    assert (r.given, r.surname_root, r.patronymic) == ("jana", "nurlan", "sarsenba")
    assert (r.iin_status, r.phone, r.sex) == ("valid", "7015550101", "F")
    assert r.street == "abaia 10"  # genitive "Абая" kept: a comparison key only


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=12,
)  # fmt: skip
_KEYS = st.sampled_from(["identifier", "name", "birthDate", "gender", "telecom", "address"])


@given(st.dictionaries(_KEYS, _JSON, max_size=6))
@settings(max_examples=100, deadline=None)
def test_any_patient_shaped_json_normalises_without_crashing(doc: dict[str, object]) -> None:
    r = record_from_patient("p", {"resourceType": "Patient", **doc})
    assert blocking_keys(r) is not None
    compare(r, r)
