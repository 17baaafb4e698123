"""FHIR → extract rows, on resources shaped like ingestion's mappings write them (pure)."""

from __future__ import annotations

from datetime import date
from typing import Any

from usmis.oversight.extract import fhir_map as fm

EXT = "https://usmis.kz/fhir/StructureDefinition/"


def person_of(patient_id: str | None) -> str | None:
    return {"p1": "PSEUDO-1"}.get(patient_id or "")


def org_of(org_id: str | None) -> str | None:
    return org_id


def test_inpatient_claim_gives_claim_stay_and_diagnosis() -> None:
    res: dict[str, Any] = {
        "resourceType": "Claim", "id": "x1",
        "identifier": [{"system": "https://usmis.kz/sid/source/fund_claims_inpatient/claim",
                        "value": "C0000000002"}],
        "type": {"coding": [{"code": "institutional"}]},
        "patient": {"reference": "Patient/p1"},
        "provider": {"identifier": {"system": "https://usmis.kz/sid/bin",
                                    "value": "101240299844"}},
        "careTeam": [{"sequence": 1, "provider": {"identifier": {"value": "PR000060"}}}],
        "diagnosis": [{"sequence": 1, "diagnosisCodeableConcept": {
            "coding": [{"system": fm.ICD10, "code": "J18.9"}]}}],
        "item": [{"sequence": 1, "productOrService": {"coding": [
            {"system": fm.TARIFF, "code": "KZG-101"}]},
            "servicedPeriod": {"start": "2024-09-09", "end": "2024-09-14"},
            "quantity": {"value": 1}, "net": {"value": 180000.0}}],
        "supportingInfo": [{"sequence": 1, "valueReference": {"identifier": {
            "system": "https://usmis.kz/source/his_astana", "value": "ASTV00000001"}}}],
    }
    out = fm.claim_rows(res, person_of, org_of)
    (claim,) = out["claims"]
    assert claim["claim_id"] == "fund_claims_inpatient|C0000000002"
    assert (claim["person_key"], claim["provider_id"], claim["practitioner_id"]) == (
        "PSEUDO-1", "101240299844", "PR000060")
    assert (claim["kind"], claim["record_id"], claim["billing_system"]) == (
        "stay", "his_astana|ASTV00000001", "his_astana")
    (stay,) = out["stays"]
    assert (stay["admit_date"], stay["discharge_date"]) == (date(2024, 9, 9), date(2024, 9, 14))
    assert out["diagnoses"][0]["icd10"] == "J18.9"


def test_drug_claim_gives_dispensation_with_days_supply() -> None:
    res: dict[str, Any] = {
        "resourceType": "Claim",
        "identifier": [{"system": "https://usmis.kz/sid/source/fund_claims_drugs/claim",
                        "value": "C7"}],
        "type": {"coding": [{"code": "pharmacy"}]}, "patient": {"reference": "Patient/p1"},
        "provider": {"identifier": {"value": "091140028160"}},
        "item": [{"productOrService": {"coding": [{"system": fm.ATC, "code": "C08CA01"}]},
                  "servicedDate": "2025-03-12", "quantity": {"value": 30},
                  "net": {"value": 270.0},
                  "extension": [{"url": EXT + "days-supply", "valueDecimal": 30}]}],
    }
    out = fm.claim_rows(res, person_of, org_of)
    assert out["claims"][0]["kind"] == "drug"
    (disp,) = out["dispensations"]
    assert (disp["atc"], disp["quantity"], disp["days_supply"]) == ("C08CA01", 30.0, 30)


def test_reference_data_and_life_events() -> None:
    tariff = fm.tariff_row({
        "resourceType": "ChargeItemDefinition",
        "code": {"coding": [{"system": fm.TARIFF, "code": "KZG-401X"}]},
        "propertyGroup": [{"priceComponent": [{"type": "base", "amount": {"value": 410000}}]}],
        "extension": [{"url": EXT + "tariff-category", "valueCode": "inpatient_case"},
                      {"url": EXT + "allowed-sex", "valueCode": "F"},
                      {"url": EXT + "expensive-case-group", "valueBoolean": True}],
    })
    assert tariff is not None
    assert (tariff["kind"], tariff["sex"], tariff["expensive"], tariff["case_family"]) == (
        "case_group", "F", True, "KZG-401")
    drugs, _ = fm.medication_rows({
        "resourceType": "MedicationKnowledge",
        "code": {"coding": [{"system": fm.ATC, "code": "A10BA02"}]},
        "cost": [{"cost": {"value": 12.0}}],
        "extension": [{"url": EXT + "strength-mg", "valueDecimal": 500},
                      {"url": EXT + "max-daily-dose-mg", "valueDecimal": 3000}]})
    assert drugs[0]["max_daily_dose"] == 6.0
    _, indications = fm.medication_rows({
        "resourceType": "MedicationKnowledge",
        "code": {"coding": [{"system": fm.ATC, "code": "A10BA02"}]},
        "administrationGuidelines": [{"indicationCodeableConcept": {
            "coding": [{"system": fm.ICD10, "code": "E11"}]}}]})
    assert indications[0]["icd10_prefix"] == "E11"
    (event,) = fm.life_event_rows({
        "resourceType": "Observation",
        "code": {"coding": [{"system": "https://usmis.kz/cs/life-event", "code": "emigration"}]},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-11-12"},
        person_of)
    assert (event["event"], event["person_key"]) == ("emigration", "PSEUDO-1")


def test_patient_keeps_no_direct_identifier() -> None:
    person, events = fm.patient_rows({
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "https://usmis.kz/sid/iin", "value": "850101300128"}],
        "name": [{"family": "Тестова"}], "telecom": [{"value": "+77001234567"}],
        "gender": "female", "birthDate": "1985-01-17", "deceasedDateTime": "2025-03-10",
        "address": [{"line": ["ул. Абая, 1"], "city": "Алматы", "state": "г. Алматы"}],
    }, "PSEUDO-1")
    flat = repr(person) + repr(events)
    for secret in ("850101300128", "Тестова", "+77001234567", "Абая", "1985-01-17"):
        assert secret not in flat
    assert (person["birth_year"], person["birth_month"], person["region"]) == (
        1985, 1, "г. Алматы")
    assert events[0]["event_date"] == date(2025, 3, 10)
