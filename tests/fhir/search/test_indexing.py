"""Index extraction (pure): typed values, blind person values, normalisation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from usmis.fhir.search import index_rows, searchable_params
from usmis.fhir.search.normalize import date_range, decimal_range, fold, telecom_value
from usmis.fhir.search.registry import PERSON_TYPES, SEARCHABLE_TYPES

from .conftest import blind
from .data import world

REQUIRED = {
    "Patient": {"identifier", "name", "family", "given", "birthdate", "gender", "phone",
                "telecom", "email", "address", "organization", "general-practitioner"},
    "Observation": {"identifier", "patient", "subject", "code", "date", "status", "category",
                    "encounter", "value-quantity", "performer"},
    "Encounter": {"identifier", "patient", "date", "status", "class", "practitioner",
                  "service-provider", "type"},
    "Condition": {"identifier", "patient", "code", "clinical-status", "onset-date", "encounter"},
    "Practitioner": {"identifier", "name", "family", "given", "telecom", "phone"},
    "Organization": {"identifier", "name", "type", "partof", "address"},
}  # fmt: skip

ALL_TYPES = [
    "Patient", "Practitioner", "PractitionerRole", "Organization", "Location", "Encounter",
    "EpisodeOfCare", "Condition", "Observation", "Procedure", "DiagnosticReport",
    "MedicationRequest", "MedicationDispense", "Immunization", "AllergyIntolerance",
    "DocumentReference", "Coverage", "Claim", "ClaimResponse", "ExplanationOfBenefit",
    "Consent", "Provenance", "AuditEvent",
]  # fmt: skip


@pytest.mark.parametrize("rtype", ALL_TYPES)
def test_every_required_type_has_parameters(rtype: str) -> None:
    assert rtype in SEARCHABLE_TYPES
    params = searchable_params(rtype)
    assert REQUIRED.get(rtype, set()) <= set(params)
    assert len(params) > 8


def test_person_values_are_blind() -> None:
    """No plaintext IIN, name, phone, e-mail, address or birth date in any index row."""
    for res in world():
        if res["resourceType"] not in PERSON_TYPES:
            continue
        rows = json.dumps(index_rows(res["resourceType"], res, blind), ensure_ascii=False)
        secrets: list[str] = []
        for i in res.get("identifier", []):
            secrets.append(i["value"])
        for n in res.get("name", []):
            secrets += [n.get("family", ""), *n.get("given", [])]
        for t in res.get("telecom", []):
            secrets += [t["value"], "".join(c for c in t["value"] if c.isdigit())]
        for a in res.get("address", []):
            secrets += [a.get("city", ""), *a.get("line", []), a.get("postalCode", "")]
        if "birthDate" in res:
            secrets.append(res["birthDate"])
        for s in filter(None, secrets):
            assert s not in rows, res["id"]
            assert fold(s) not in rows, res["id"]


def test_identifiers_of_any_type_are_blind() -> None:
    claim = {"resourceType": "Claim", "id": "c1",
             "identifier": [{"system": "https://usmis.kz/sid/iin", "value": "900512300123"}],
             "patient": {"identifier": {"system": "https://usmis.kz/sid/iin",
                                        "value": "900512300123"}}}  # fmt: skip
    rows = json.dumps(index_rows("Claim", claim, blind))
    assert "900512300123" not in rows
    assert rows.count(blind("t:900512300123")) == 2


def test_typed_rows() -> None:
    obs: dict[str, Any] = next(r for r in world() if r["id"] == "o1")
    rows = index_rows("Observation", obs, blind)
    tok = {(r["param"], r["system"], r["code"]) for r in rows["fhir_idx_token"]}
    assert ("code", "http://loinc.org", "1234-5") in tok
    assert ("status", None, "final") in tok
    ref = {(r["param"], r["target_type"], r["target_id"]) for r in rows["fhir_idx_reference"]}
    # "patient" is stored once, as "subject" (the narrower parameter filters target types)
    assert ("subject", "Patient", "pA") in ref
    assert not any(p == "patient" for p, _, _ in ref)
    (q,) = [r for r in rows["fhir_idx_quantity"] if r["param"] == "value-quantity"]
    assert (q["value"], q["code"]) == (5.4, "mmol/L")
    (d,) = [r for r in rows["fhir_idx_date"] if r["param"] == "date"]
    assert (d["low"], d["high"]) == date_range("2024-01-15T10:00:00Z")


def test_odd_shapes_do_not_crash() -> None:
    odd = {"resourceType": "Observation", "id": "x", "code": "not-a-concept",
           "subject": {"reference": "#contained"}, "effectivePeriod": {"start": "garbage"},
           "valueQuantity": {"value": "1"}, "identifier": [None, 3, {"value": 5}],
           "category": [{"coding": "x"}],
           "performer": [{"reference": "urn:uuid:1234"}]}  # fmt: skip
    rows = index_rows("Observation", odd, blind)
    refs = rows.get("fhir_idx_reference", [])
    assert [r["url"] for r in refs] == ["urn:uuid:1234"]
    with pytest.raises(ValueError, match="no id"):
        index_rows("Observation", {"resourceType": "Observation"}, blind)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", ("2024-01-01T00:00:00.000", "2024-12-31T23:59:59.999")),
        ("2024-02", ("2024-02-01T00:00:00.000", "2024-02-29T23:59:59.999")),
        ("2024-02-03", ("2024-02-03T00:00:00.000", "2024-02-03T23:59:59.999")),
        ("2024-02-03T04:05Z", ("2024-02-03T04:05:00.000", "2024-02-03T04:05:59.999")),
        ("2024-02-03T04:05:06+05:00", ("2024-02-02T23:05:06.000", "2024-02-02T23:05:06.999")),
        ("2024-02-03T04:05:06.1Z", ("2024-02-03T04:05:06.100", "2024-02-03T04:05:06.199")),
        ("2024-02-03T04:05:06.123456Z", ("2024-02-03T04:05:06.123", "2024-02-03T04:05:06.123")),
        ("2023-02-29", None),
        ("20240101", None),
        ("", None),
    ],
)
def test_date_range(text: str, expected: tuple[str, str] | None) -> None:
    from usmis.fhir.search.values import ms_to_dt

    got = date_range(text)
    if expected is None:
        assert got is None
        return
    assert got is not None
    fmt = [ms_to_dt(x).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] for x in got]
    assert tuple(fmt) == expected


def test_normalisers() -> None:
    assert fold("  ÉCLAIR  Ёлка ") == "eclair елка"
    assert telecom_value("phone", "+7 (701) 123-45-67") == "77011234567"
    assert telecom_value("email", " A@B.kz ") == "a@b.kz"
    assert decimal_range("5.4") == pytest.approx((5.4, 5.35, 5.45))
    assert decimal_range("100") == pytest.approx((100, 99.5, 100.5))
    assert decimal_range("nan") is None
