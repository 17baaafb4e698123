"""A small synthetic world for table-driven search tests (invented people, no real data)."""

from __future__ import annotations

from typing import Any

LOINC = "http://loinc.org"
IIN = "https://usmis.kz/sid/iin"
UCUM = "http://unitsofmeasure.org"


def world() -> list[dict[str, Any]]:
    def meta(ts: str) -> dict[str, Any]:
        return {"lastUpdated": ts}

    return [
        {"resourceType": "Organization", "id": "org1", "meta": meta("2024-01-01T00:00:00Z"),
         "identifier": [{"system": "https://usmis.kz/sid/bin", "value": "010203040506"}],
         "name": "Городская Поликлиника 1", "alias": ["Clinic Éclair"], "active": True,
         "address": [{"city": "Алматы", "country": "KZ"}]},
        {"resourceType": "Organization", "id": "org2", "meta": meta("2024-01-02T00:00:00Z"),
         "name": "Central Lab", "partOf": {"reference": "Organization/org1"}},
        {"resourceType": "Practitioner", "id": "pr1", "meta": meta("2024-01-03T00:00:00Z"),
         "identifier": [{"system": "https://usmis.kz/sid/licence", "value": "LIC-77"}],
         "name": [{"family": "Petrov", "given": ["Ivan"]}], "gender": "male"},
        {"resourceType": "Patient", "id": "pA", "meta": meta("2024-02-01T10:00:00Z"),
         "identifier": [{"system": IIN, "value": "900512300123"},
                        {"system": "https://usmis.kz/sid/source/s1/patient", "value": "A-1"}],
         "name": [{"family": "Иванова", "given": ["Анна", "Сергеевна"]}],
         "telecom": [{"system": "phone", "value": "+7 (701) 123-45-67"},
                     {"system": "email", "value": "Anna@Example.KZ"}],
         "gender": "female", "birthDate": "1990-05-12",
         "address": [{"line": ["Abai 10"], "city": "Almaty", "postalCode": "050000"}],
         "generalPractitioner": [{"reference": "Practitioner/pr1"}],
         "managingOrganization": {"reference": "Organization/org1"}},
        {"resourceType": "Patient", "id": "pB", "meta": meta("2024-02-02T10:00:00Z"),
         "identifier": [{"system": IIN, "value": "850202400456"}],
         "name": [{"family": "Müller", "given": ["José"], "text": "José Müller"}],
         "telecom": [{"system": "phone", "value": "87019990000"}],
         "gender": "male", "birthDate": "1985",
         "managingOrganization": {"reference": "Organization/org2"}},
        {"resourceType": "Patient", "id": "pC", "meta": meta("2024-02-03T10:00:00Z"),
         "gender": "unknown", "deceasedDateTime": "2023-11-01T08:00:00Z"},
        {"resourceType": "Encounter", "id": "e1", "meta": meta("2024-01-15T12:00:00Z"),
         "status": "finished",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
         "subject": {"reference": "Patient/pA"},
         "participant": [{"individual": {"reference": "Practitioner/pr1"}}],
         "period": {"start": "2024-01-15T09:00:00Z", "end": "2024-01-15T11:00:00Z"},
         "serviceProvider": {"reference": "Organization/org1"}},
        {"resourceType": "Observation", "id": "o1", "meta": meta("2024-01-15T10:30:00Z"),
         "status": "final",
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                             "observation-category", "code": "laboratory"}]}],
         "code": {"coding": [{"system": LOINC, "code": "1234-5", "display": "Glucose"}],
                  "text": "Glucose [Moles/volume] in Blood"},
         "subject": {"reference": "Patient/pA"}, "encounter": {"reference": "Encounter/e1"},
         "effectiveDateTime": "2024-01-15T10:00:00Z",
         "valueQuantity": {"value": 5.4, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
         "performer": [{"reference": "Practitioner/pr1"}]},
        {"resourceType": "Observation", "id": "o2", "meta": meta("2024-02-01T08:00:00Z"),
         "status": "preliminary",
         "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]},
         "subject": {"reference": "Patient/pA"},
         "effectivePeriod": {"start": "2024-02-01", "end": "2024-02-03"},
         "valueQuantity": {"value": 72, "unit": "beats/min", "system": UCUM, "code": "/min"}},
        {"resourceType": "Observation", "id": "o3", "meta": meta("2023-06-01T00:00:00Z"),
         "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "1234-5"},
                             {"system": "urn:local", "code": "GLU"}]},
         "subject": {"reference": "Patient/pB"},
         "effectiveDateTime": "2023",
         "valueQuantity": {"value": 7.9, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}},
        {"resourceType": "Observation", "id": "o4", "meta": meta("2023-07-01T00:00:00Z"),
         "status": "cancelled", "code": {"coding": [{"code": "abc"}]},
         "subject": {"reference": "Group/g1"}},
        {"resourceType": "Condition", "id": "c1", "meta": meta("2024-01-16T00:00:00Z"),
         "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}]},
         "subject": {"reference": "Patient/pA"}, "onsetDateTime": "2020-03",
         "clinicalStatus": {"coding": [{"code": "active"}]}},
        {"resourceType": "Provenance", "id": "pv1", "meta": meta("2024-01-15T10:31:00Z"),
         "target": [{"reference": "Observation/o1"}], "recorded": "2024-01-15T10:31:00Z",
         "agent": [{"who": {"reference": "Practitioner/pr1"}}]},
        {"resourceType": "Coverage", "id": "cov1", "meta": meta("2024-01-01T00:00:00Z"),
         "status": "active", "beneficiary": {"reference": "Patient/pA"},
         "payor": [{"identifier": {"system": "https://usmis.kz/sid/bin", "value": "999"}}]},
        {"resourceType": "Basic", "id": "b1", "meta": meta("2024-03-01T00:00:00Z"),
         "code": {"text": "other"}},
    ]  # fmt: skip
