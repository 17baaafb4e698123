"""Pure parts of the policy: sensitivity classes, projections, the decision table."""

from __future__ import annotations

from typing import Any

import pytest

from usmis.access.model import Principal, Role, parse_scopes
from usmis.access.policy import Facts, decide_row, decide_type
from usmis.access.projection import care_links, consent_resource, consent_rules
from usmis.access.sensitivity import BUILTIN, CategoryTable, classify, classify_with


def condition(code: str, system: str = "http://hl7.org/fhir/sid/icd-10") -> dict[str, Any]:
    return {"resourceType": "Condition", "subject": {"reference": "Patient/p"},
            "code": {"coding": [{"system": system, "code": code}]}}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("B20", "hiv"), ("B24", "hiv"), ("B23.8", "hiv"), ("Z21", "hiv"), ("O98.7", "hiv"),
        ("F10.2", "substance"), ("F19", "substance"), ("F32.1", "mental"), ("F20", "mental"),
        ("F99", "mental"), ("O04.9", "reproductive"), ("Z30.0", "reproductive"),
        ("A54.0", "reproductive"), ("I10", None), ("B19", None), ("B25", None), ("J06.9", None),
    ],
)
def test_icd10_ranges_define_the_categories(code: str, expected: str | None) -> None:
    assert classify(condition(code)) == expected


def test_medications_tests_and_claims_are_classified_too() -> None:
    med = {"resourceType": "MedicationRequest", "medicationCodeableConcept": {
        "coding": [{"system": "http://www.whocc.no/atc", "code": "J05AR03"}]}}
    assert classify(med) == "hiv"
    obs = {"resourceType": "Observation", "code": {"coding": [
        {"system": "http://loinc.org", "code": "7917-8"}]}}
    assert classify(obs) == "hiv"
    claim = {"resourceType": "Claim", "diagnosis": [{"sequence": 1, "diagnosisCodeableConcept": {
        "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F32.0"}]}}]}
    assert classify(claim) == "mental"
    # Identity resources are never classified; the most protected category wins.
    assert classify({"resourceType": "Patient", "code": condition("B20")["code"]}) is None
    both = condition("F32")
    both["code"]["coding"].append({"system": "http://hl7.org/fhir/sid/icd-10", "code": "B20"})
    assert classify(both) == "hiv"


def test_category_table_is_configurable() -> None:
    table = CategoryTable.build({**BUILTIN, "mental": {"icd10": ["F30-F39"]}})
    assert classify_with(table, condition("F32")) == "mental"
    assert classify_with(table, condition("F20")) is None


def test_care_links_from_ordinary_resources() -> None:
    pat = {"resourceType": "Patient", "managingOrganization": {"reference": "Organization/o1"},
           "generalPractitioner": [{"reference": "Organization/o2"},
                                   {"reference": "Practitioner/x"}]}
    assert [(c.organization_id, c.kind) for c in care_links("Patient", pat)] == [
        ("o1", "attachment"), ("o2", "attachment")]
    eoc = {"resourceType": "EpisodeOfCare", "status": "active",
           "managingOrganization": {"reference": "Organization/o3"},
           "period": {"start": "2024-01-01"}}
    (link,) = care_links("EpisodeOfCare", eoc)
    assert (link.kind, link.start is not None, link.end) == ("attachment", True, None)
    assert care_links("EpisodeOfCare", {**eoc, "status": "finished"}) == []
    enc = {"resourceType": "Encounter", "status": "finished",
           "serviceProvider": {"reference": "Organization/o4"},
           "period": {"start": "2025-05-01T10:00:00+05:00"}}
    (link,) = care_links("Encounter", enc)
    assert link.kind == "encounter"
    assert link.end == link.start
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
          "performer": [{"reference": "Organization/o5"}]}
    assert [c.kind for c in care_links("ServiceRequest", sr)] == ["referral"]
    assert care_links("ServiceRequest", {**sr, "status": "completed"}) == []


def test_consent_round_trip() -> None:
    res = consent_resource("p1", deny_categories=["hiv", "mental"], deny_orgs=["org-9"])
    rules = {(r.kind, r.value) for r in consent_rules(res)}
    assert rules == {("deny-category", "hiv"), ("deny-category", "mental"),
                     ("deny-org", "org-9")}
    assert consent_rules({**res, "status": "inactive"}) == []


class Row:
    def __init__(self, patient_id: str | None = "p1", source_id: str | None = "his-b",
                 author_org: str | None = "org-B", sensitivity: str | None = None) -> None:
        self.patient_id, self.source_id = patient_id, source_id
        self.author_org, self.sensitivity = author_org, sensitivity


def who(role: Role, **kw: Any) -> Principal:
    defaults = {
        Role.CLINICIAN: "user/*.cruds", Role.PATIENT: "patient/*.rs patient/Consent.cu",
        Role.SOURCE: "system/*.cruds", Role.ADMIN: "system/*.cruds", Role.AUDITOR: "user/*.rs",
        Role.REGISTRAR: "user/*.rs", Role.INVESTIGATOR: "user/*.rs",
    }
    scope = kw.pop("scope", defaults[role])
    return Principal(subject="s", role=role, scopes=parse_scopes(scope), **kw)


DOC = who(Role.CLINICIAN, organization_id="org-A")
CARE = Facts(in_care=True)
NONE = Facts()
EMERG = Facts(emergency=True)

# (principal, action, type, row, facts, allowed, reason)
CASES = [
    (DOC, "read", "Observation", Row(), CARE, True, "care"),
    (DOC, "read", "Observation", Row(), NONE, False, "no-care-relationship"),
    (DOC, "read", "Observation", Row(), EMERG, True, "emergency"),
    (DOC, "read", "Observation", Row(author_org="org-A"), NONE, True, "allowed"),
    (DOC, "read", "Observation", Row(sensitivity="hiv"),
     Facts(in_care=True, denied_categories=frozenset({"hiv"})), False, "consent-category"),
    (DOC, "read", "Observation", Row(sensitivity="hiv"),
     Facts(emergency=True, denied_categories=frozenset({"hiv"})), False, "consent-category"),
    (DOC, "read", "Observation", Row(sensitivity="hiv", author_org="org-A"),
     Facts(denied_categories=frozenset({"hiv"})), True, "allowed"),
    (DOC, "read", "Observation", Row(),
     Facts(in_care=True, denied_orgs=frozenset({"org-A"})), False, "consent-organization"),
    (DOC, "read", "Organization", Row(patient_id=None), NONE, True, "allowed"),
    (DOC, "create", "Observation", Row(author_org="org-A"), NONE, False, "no-care-relationship"),
    (DOC, "create", "Observation", Row(author_org="org-A"), CARE, True, "care"),
    (DOC, "update", "Observation", Row(), CARE, False, "author"),
    (DOC, "delete", "Observation", Row(author_org="org-A"), NONE, True, "allowed"),
    (DOC, "export", "Observation", Row(), CARE, False, "export-role"),
    (who(Role.CLINICIAN, organization_id="org-A", scope="user/Patient.rs"), "read",
     "Observation", Row(), CARE, False, "scope"),
    (who(Role.PATIENT, patient_id="p1"), "read", "Observation", Row(),
     Facts(own_patients=frozenset({"p1", "p1b"})), True, "allowed"),
    (who(Role.PATIENT, patient_id="p1"), "read", "Observation", Row(patient_id="p2"),
     Facts(own_patients=frozenset({"p1"})), False, "not-own-record"),
    (who(Role.PATIENT, patient_id="p1"), "create", "Observation", Row(), NONE, False, "scope"),
    (who(Role.PATIENT, patient_id="p1"), "create", "Consent", Row(),
     Facts(own_patients=frozenset({"p1"})), True, "allowed"),
    (who(Role.SOURCE, source_id="his-b"), "read", "Observation", Row(), NONE, True, "allowed"),
    (who(Role.SOURCE, source_id="his-c"), "read", "Observation", Row(), NONE, False, "source"),
    (who(Role.SOURCE, source_id="his-c"), "update", "Observation", Row(), NONE, False, "source"),
    (who(Role.SOURCE, source_id="his-c", scope="system/Observation.rs"), "create",
     "Observation", Row(source_id="his-c"), NONE, False, "scope"),
    (who(Role.AUDITOR), "read", "Observation", Row(), NONE, False, "role"),
    (who(Role.AUDITOR), "read", "Consent", Row(), NONE, True, "allowed"),
    (who(Role.REGISTRAR), "read", "Patient", Row(), NONE, True, "allowed"),
    (who(Role.REGISTRAR), "read", "Condition", Row(), NONE, False, "role"),
    (who(Role.INVESTIGATOR), "read", "Claim", Row(), NONE, True, "allowed"),
    (who(Role.INVESTIGATOR), "read", "Claim", Row(sensitivity="mental"),
     Facts(denied_categories=frozenset({"mental"})), False, "consent-category"),
    (who(Role.INVESTIGATOR), "read", "Condition", Row(), NONE, False, "role"),
    (who(Role.INVESTIGATOR, purpose_of_use="FRAUD"), "export", "Claim", Row(), NONE, True,
     "allowed"),
    (who(Role.INVESTIGATOR), "export", "Claim", Row(), NONE, False, "export-purpose"),
    (who(Role.ADMIN), "read", "Observation", Row(), NONE, True, "allowed"),
]


@pytest.mark.parametrize(("p", "action", "rtype", "row", "facts", "allowed", "reason"), CASES)
def test_decision_table(p: Principal, action: str, rtype: str, row: Row, facts: Facts,
                        allowed: bool, reason: str) -> None:
    d = decide_row(p, action, rtype, row, facts)
    assert (d.allowed, d.reason) == (allowed, reason)


def test_type_level_decisions() -> None:
    assert decide_type(DOC, "search", "Observation").allowed
    assert not decide_type(who(Role.AUDITOR), "create", "Consent").allowed
    assert decide_type(who(Role.ADMIN, purpose_of_use="HOPERAT"), "export", "Patient").allowed


def test_organizations_referenced_by_bin_count_too() -> None:
    eoc = {"resourceType": "EpisodeOfCare", "status": "active",
           "managingOrganization": {"identifier": {"system": "https://usmis.kz/sid/bin",
                                                   "value": "011040709061"}}}
    assert [c.organization_id for c in care_links("EpisodeOfCare", eoc)] == ["011040709061"]
    enc = {"resourceType": "Encounter", "status": "finished", "serviceProvider": {
        "reference": "Organization/o1",
        "identifier": {"system": "https://usmis.kz/sid/bin", "value": "220440615035"}}}
    assert [c.organization_id for c in care_links("Encounter", enc)] == ["o1", "220440615035"]
