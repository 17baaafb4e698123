"""Structural R4 validation: table-driven cases, each naming the element it must report."""

from __future__ import annotations

from typing import Any

import pytest

from usmis.fhir.validation import resource_classes, validate_resource

from .conftest import make_observation, make_patient


def _obs(**changes: Any) -> dict[str, Any]:
    obs = make_observation("p1")
    for k, v in changes.items():
        if v is None:
            obs.pop(k, None)
        else:
            obs[k] = v
    return obs


CASES = [
    ("unknown element", _obs(foo=1), "Observation.foo", "structure"),
    ("wrong primitive type", _obs(status=5), "Observation.status", "structure"),
    ("required missing", _obs(status=None), "Observation.status", "required"),
    ("choice twice", _obs(valueString="x"), "Observation.valueString", "structure"),
    ("bad dateTime", _obs(effectiveDateTime="2024-02-30T25:00"), "Observation.effectiveDateTime",
     "value"),
    ("second list item checked",
     _obs(code={"coding": [{"system": "a"}, {"system": 3}]}),
     "Observation.code.coding[1].system", "structure"),
    ("array where object", _obs(subject=[{"reference": "Patient/1"}]), "Observation.subject",
     "structure"),
    ("a day its month lacks", _obs(effectiveDateTime="2024-02-30T10:00:00Z"),
     "Observation.effectiveDateTime", "value"),
    ("not a leap year", _obs(effectiveDateTime="2023-02-29"), "Observation.effectiveDateTime",
     "value"),
    ("empty string", _obs(status=""), "Observation.status", "value"),
    ("empty array", _obs(category=[]), "Observation.category", "invalid"),
    ("control character", _obs(status="fin\u0001al"), "Observation.status", "value"),
    ("bad contained", _obs(contained=[{"resourceType": "Nope"}]), "Observation.contained[0]",
     "structure"),
    ("contained checked", _obs(contained=[{"resourceType": "Patient", "gender": 1}]),
     "Observation.contained[0].gender", "structure"),
    ("bad id", {**make_patient(), "id": "has space"}, "Patient.id", "value"),
    ("bad date", {**make_patient(), "birthDate": "1990-13-01"}, "Patient.birthDate", "value"),
    ("choice required", {"resourceType": "Observation", "status": "final",
                         "code": {"text": "x"}, "valueBoolean": "yes"},
     "Observation.valueBoolean", "structure"),
]


@pytest.mark.parametrize(("label", "resource", "expression", "code"), CASES,
                         ids=[c[0] for c in CASES])
def test_invalid_resources_name_the_element(
    label: str, resource: dict[str, Any], expression: str, code: str
) -> None:
    issues = validate_resource(resource)
    assert (expression, code) in {(i.expression, i.code) for i in issues}, issues


def test_valid_resources_pass_and_messages_carry_no_values() -> None:
    assert validate_resource(make_patient()) == []
    assert validate_resource(make_observation("p1")) == []
    assert validate_resource({"resourceType": "Patient", "_gender": {"extension": [
        {"url": "http://x", "valueString": "y"}]}}) == []
    issues = validate_resource({**make_patient(family="Testova"), "gender": 99,
                                "birthDate": "Testova"})
    assert issues
    assert all("Testova" not in i.message for i in issues)


def test_every_r4_resource_type_is_known() -> None:
    types = resource_classes()
    assert len(types) == 146
    assert {"Patient", "Claim", "ExplanationOfBenefit", "Substance", "AuditEvent"} <= set(types)
    assert validate_resource({"resourceType": "Foo"})[0].code == "not-supported"
    assert validate_resource([1, 2])[0].message == "a resource must be a JSON object"
