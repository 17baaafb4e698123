"""Table-driven search cases over one small world, per parameter type and modifier.

Each case: (resource type, query string, expected ids) or an expected 400 (BadRequest).
"""

from __future__ import annotations

import pytest

from usmis.kit.errors import BadRequest

from .conftest import BASE, Store

E400 = "400"
L = "http://loinc.org"

TOKEN = [
    ("Observation", f"code={L}|1234-5", {"o1", "o3"}),
    ("Observation", "code=1234-5", {"o1", "o3"}),
    ("Observation", "code=urn:local|GLU", {"o3"}),
    ("Observation", "code=|abc", {"o4"}),
    ("Observation", "code=|1234-5", set()),
    ("Observation", f"code={L}|", {"o1", "o2", "o3"}),
    ("Observation", "code=1234-5,8867-4", {"o1", "o2", "o3"}),
    ("Observation", "code=1234-5&code=urn:local|GLU", {"o3"}),
    ("Observation", "code:not=1234-5", {"o2", "o4"}),
    ("Observation", "status=final", {"o1", "o3"}),
    ("Observation", "status:not=final", {"o2", "o4"}),
    ("Observation", "status=FINAL", set()),  # codes are case-sensitive
    ("Observation", "code:text=glucose", {"o1"}),
    ("Observation", "code:text=MOLES/VOLUME", {"o1"}),  # whole words, any order and case
    ("Observation", "code:text=blood glucose", {"o1"}),
    ("Observation", "code:text=gluc", set()),  # stored blind: no prefixes
    ("Observation", "code:text=heart", {"o2"}),  # a coding's display where no text
    ("Observation", "category=laboratory", {"o1"}),
    ("Observation", "category:missing=true", {"o2", "o3", "o4"}),
    ("Observation", "category:missing=false", {"o1"}),
    ("Observation", "code:in=http://x/vs", E400),
    ("Organization", "active=true", {"org1"}),
    ("Condition", "code=http://hl7.org/fhir/sid/icd-10|E11.9", {"c1"}),
    ("Encounter", "class=AMB", {"e1"}),
    ("Patient", "gender=female,male", {"pA", "pB"}),
    ("Patient", "gender:missing=true", set()),
    ("Patient", "deceased:missing=false", set()),
    ("Organization", "_tag=x", set()),
]

BLIND = [
    ("Patient", "identifier=https://usmis.kz/sid/iin|900512300123", {"pA"}),
    ("Patient", "identifier=900512300123", {"pA"}),
    ("Patient", "identifier=https://usmis.kz/sid/iin|", {"pA", "pB"}),
    ("Patient", "identifier=https://usmis.kz/sid/licence|900512300123", set()),
    ("Patient", "identifier=900512300124", set()),
    ("Patient", "identifier=900512300123,850202400456", {"pA", "pB"}),
    ("Patient", "identifier:not=900512300123", {"pB", "pC"}),
    ("Patient", "identifier:text=9005", E400),
    ("Patient", "identifier:missing=true", {"pC"}),
    ("Practitioner", "identifier=LIC-77", {"pr1"}),
    ("Organization", "identifier=010203040506", {"org1"}),
    ("Patient", "phone=+77011234567", {"pA"}),
    ("Patient", "phone=7 701 123 45 67", {"pA"}),
    ("Patient", "telecom=+7 (701) 123-45-67", {"pA"}),
    ("Patient", "telecom=phone|77011234567", {"pA"}),
    ("Patient", "email=anna@example.kz", {"pA"}),
    ("Patient", "telecom=ANNA@example.kz", {"pA"}),
    ("Patient", "phone=anna@example.kz", set()),
    ("Patient", "email=77011234567", set()),
    ("Patient", "name=иванова", {"pA"}),
    ("Patient", "name=ИВАНОВА", {"pA"}),
    ("Patient", "name=Анна", {"pA"}),
    ("Patient", "name=анна иванова", {"pA"}),
    ("Patient", "name=анна petrov", set()),
    ("Patient", "name=иван", set()),  # whole words only: prefixes are not blind-indexable
    ("Patient", "name=muller", {"pB"}),
    ("Patient", "name=MÜLLER", {"pB"}),
    ("Patient", "name=jose", {"pB"}),
    ("Patient", "name:exact=Müller", {"pB"}),
    ("Patient", "name:exact=José Müller", {"pB"}),
    ("Patient", "name:exact=muller", set()),
    ("Patient", "name:contains=ван", E400),
    ("Patient", "family=Иванова", {"pA"}),
    ("Patient", "family=Анна", set()),
    ("Patient", "given=анна", {"pA"}),
    ("Patient", "given=сергеевна", {"pA"}),
    ("Patient", "phonetic=ivanova", set()),
    ("Patient", "name=иванова,muller", {"pA", "pB"}),
    ("Patient", "address-city=almaty", {"pA"}),
    ("Patient", "address=abai", {"pA"}),
    # address = city + country + postal code + state + the rest (stored once each)
    ("Patient", "address=almaty", {"pA"}),
    ("Patient", "address=050000", {"pA"}),
    ("Patient", "address:exact=Almaty", {"pA"}),
    ("Patient", "address:exact=almaty", set()),
    ("Patient", "address:missing=true", {"pB", "pC"}),
    ("Patient", "address-postalcode=050000", {"pA"}),
    ("Patient", "birthdate=1990-05-12", {"pA"}),
    ("Patient", "birthdate=1990-05", {"pA"}),
    ("Patient", "birthdate=1990", {"pA"}),
    ("Patient", "birthdate=1985", {"pB"}),
    ("Patient", "birthdate=1985-01", set()),  # stored at year precision: not within a month
    ("Patient", "birthdate=ge1986", {"pA"}),
    ("Patient", "birthdate=lt1990", {"pB"}),
    ("Patient", "birthdate=le1990", {"pA", "pB"}),
    ("Patient", "birthdate=ne1985", {"pA"}),
    ("Patient", "birthdate=gt1990-05-12", set()),
    ("Patient", "birthdate=gt1990-05-11", {"pA"}),
    ("Patient", "birthdate=ge1990-05-12", {"pA"}),
    ("Patient", "birthdate=lt1990-05-12", {"pB"}),  # the whole year 1985 is before
    ("Patient", "birthdate=le1990-05", {"pA", "pB"}),
    ("Patient", "birthdate=sa1985&birthdate=eb1990-06", {"pA"}),
    ("Patient", "birthdate=ne1990-05-12", E400),
    ("Patient", "birthdate=ap1990", E400),
    ("Patient", "birthdate=1990-05-12T10:00", E400),
    ("Patient", "birthdate:missing=true", {"pC"}),
    ("Patient", "death-date=2023-11-01", {"pC"}),
    ("Practitioner", "name=petrov", {"pr1"}),
    ("Practitioner", "family:contains=etr", E400),
    ("Patient", "_sort=name", E400),
]

STRING = [
    ("Organization", "name=город", {"org1"}),
    ("Organization", "name=ГОРОДСКАЯ поли", {"org1"}),
    ("Organization", "name=clinic eclair", {"org1"}),
    ("Organization", "name=CLINIC ÉCL", {"org1"}),
    ("Organization", "name=central", {"org2"}),
    ("Organization", "name=lab", set()),
    ("Organization", "name:contains=lab", {"org2"}),
    ("Organization", "name:contains=ПОЛИКЛ", {"org1"}),
    ("Organization", "name:exact=Central Lab", {"org2"}),
    ("Organization", "name:exact=central lab", set()),
    ("Organization", "name=central,город", {"org1", "org2"}),
    ("Organization", "name=c%", set()),
    ("Organization", "name:contains=_", set()),
    ("Organization", "name:missing=false", {"org1", "org2"}),
    ("Organization", "address-city=алматы", {"org1"}),
    ("Organization", "address=алматы", {"org1"}),
    ("Organization", "address=kz", {"org1"}),
    ("Organization", "address:missing=true", {"org2"}),
    ("Organization", "name:text=x", E400),
]

DATE = [
    ("Observation", "date=2024-01-15", {"o1"}),
    ("Observation", "date=2024-01", {"o1"}),
    ("Observation", "date=2024", {"o1", "o2"}),
    ("Observation", "date=2024-01-15T10:00:00Z", {"o1"}),
    ("Observation", "date=2024-01-15T15:00:00%2B05:00", {"o1"}),
    ("Observation", "date=2024-01-15T10:00", {"o1"}),
    ("Observation", "date=2023", {"o3"}),
    ("Observation", "date=2023-06", set()),  # the year 2023 is not within June
    ("Observation", "date=gt2024-01-15", {"o2"}),
    ("Observation", "date=ge2024-01-15", {"o1", "o2"}),
    ("Observation", "date=lt2024-01-15", {"o3"}),
    ("Observation", "date=le2024-01-15", {"o1", "o3"}),
    ("Observation", "date=sa2024-01-31", {"o2"}),
    ("Observation", "date=eb2024-01-01", {"o3"}),
    ("Observation", "date=ne2024-01-15", {"o2", "o3"}),
    ("Observation", "date=2024-02-02", set()),  # the period is not within one day
    ("Observation", "date=ge2024-02-02&date=le2024-02-02", {"o2"}),  # but overlaps it
    ("Observation", "date=ap2035-01-16", set()),
    ("Observation", "date=2024-01-15,2023", {"o1", "o3"}),
    ("Observation", "date:missing=true", {"o4"}),
    ("Observation", "date=2024-13", E400),
    ("Observation", "date=yesterday", E400),
    ("Observation", "date=2024-02-30", E400),
    ("Encounter", "date=2024-01-15", {"e1"}),
    ("Encounter", "date=lt2024-01-15T10:00Z", {"e1"}),
    ("Condition", "onset-date=2020", {"c1"}),
    ("Condition", "onset-date=2020-03-05", set()),
    ("Provenance", "recorded=2024-01-15", {"pv1"}),
    ("Observation", "_lastUpdated=2024-01-15", {"o1"}),
    ("Observation", "_lastUpdated=ge2024-01-01", {"o1", "o2"}),
    ("Observation", "_lastUpdated=lt2024", {"o3", "o4"}),
    ("Observation", "_lastUpdated=2024-01-15T10:30:00Z", {"o1"}),
    ("Observation", "_lastUpdated=gt2024-01-15T10:30:00Z", {"o2"}),
    ("Observation", "_lastUpdated=bad", E400),
]

REFERENCE = [
    ("Observation", "patient=pA", {"o1", "o2"}),
    ("Observation", "patient=Patient/pA", {"o1", "o2"}),
    ("Observation", f"patient={BASE}/Patient/pA", {"o1", "o2"}),
    ("Observation", "subject=Patient/pA", {"o1", "o2"}),
    ("Observation", "subject:Patient=pA", {"o1", "o2"}),
    ("Observation", "subject:Group=pA", set()),
    ("Observation", "subject=Group/g1", {"o4"}),
    ("Observation", "subject=g1", {"o4"}),
    ("Observation", "patient=g1", set()),
    ("Observation", "patient=pA,pB", {"o1", "o2", "o3"}),
    ("Observation", "patient=pA&code=1234-5", {"o1"}),
    ("Observation", "patient:missing=true", {"o4"}),
    ("Observation", "encounter=e1", {"o1"}),
    ("Observation", "encounter:missing=true", {"o2", "o3", "o4"}),
    ("Observation", "patient=http://elsewhere.org/fhir/Patient/pA", set()),
    ("Observation", "patient:Organization=pA", E400),
    ("Observation", "patient:above=pA", E400),
    ("Encounter", "practitioner=pr1", {"e1"}),
    ("Encounter", "participant=Practitioner/pr1", {"e1"}),
    ("Encounter", "service-provider=org1", {"e1"}),
    ("Patient", "general-practitioner=pr1", {"pA"}),
    ("Patient", "organization=Organization/org2", {"pB"}),
    ("Organization", "partof=org1", {"org2"}),
    ("Provenance", "target=Observation/o1", {"pv1"}),
    ("Provenance", "patient=pA", set()),
    ("Coverage", "payor:identifier=https://usmis.kz/sid/bin|999", {"cov1"}),
    ("Coverage", "payor:identifier=999", {"cov1"}),
    ("Coverage", "payor:identifier=998", set()),
    ("Coverage", "patient=pA", {"cov1"}),
]

QUANTITY = [
    ("Observation", "value-quantity=5.4", {"o1"}),
    ("Observation", "value-quantity=5", {"o1"}),  # 5 means [4.5, 5.5)
    ("Observation", "value-quantity=5.40", {"o1"}),
    ("Observation", "value-quantity=5.41", set()),  # [5.395, 5.405): 5.4 is in
    ("Observation", "value-quantity=gt6", {"o2", "o3"}),
    ("Observation", "value-quantity=le5.4", {"o1"}),
    ("Observation", "value-quantity=lt5.4", set()),
    ("Observation", "value-quantity=ge7.9&value-quantity=lt72", {"o3"}),
    ("Observation", "value-quantity=5.4|http://unitsofmeasure.org|mmol/L", {"o1"}),
    ("Observation", "value-quantity=gt0|http://unitsofmeasure.org|mmol/L", {"o1", "o3"}),
    ("Observation", "value-quantity=gt0||mmol/L", {"o1", "o3"}),
    ("Observation", "value-quantity=gt0||beats/min", {"o2"}),
    ("Observation", "value-quantity=ap70", {"o2"}),
    ("Observation", "value-quantity=ne5.4", {"o2", "o3"}),
    ("Observation", "value-quantity:missing=true", {"o4"}),
    ("Observation", "value-quantity=abc", E400),
    ("Observation", "value-quantity=5|x", E400),
]

SPECIAL = [
    ("Observation", "_id=o1,o2", {"o1", "o2"}),
    ("Observation", "_id=o1&status=final", {"o1"}),
    ("Observation", "_id:not=o1", {"o2", "o3", "o4"}),
    ("Basic", "_id=b1", {"b1"}),
    ("Basic", "_lastUpdated=2024-03", {"b1"}),
    ("Basic", "code=other", E400),
    ("Observation", "nonsense=1", E400),
    ("Observation", "_sort=nonsense", E400),
    ("Observation", "_count=-1", E400),
    ("Observation", "_count=x", E400),
    ("Observation", "_total=maybe", E400),
    ("Observation", "_summary=maybe", E400),
    ("Observation", "_include=Observation:nonsense", E400),
    ("Observation", "_cursor=@@@", E400),
    ("Observation", "_has:Observation", E400),
    ("Observation", "patient.nonsense=1", E400),
    ("Observation", "focus.name=x", E400),  # any-type reference needs a type modifier
    ("Observation", "_format=json&_pretty=true", {"o1", "o2", "o3", "o4"}),
]

CHAIN_HAS = [
    ("Observation", "patient.identifier=900512300123", {"o1", "o2"}),
    ("Observation", "patient.identifier=https://usmis.kz/sid/iin|850202400456", {"o3"}),
    ("Observation", "subject:Patient.name=muller", {"o3"}),
    ("Observation", "subject.gender=female", {"o1", "o2"}),
    ("Observation", "patient.birthdate=1990", {"o1", "o2"}),
    ("Observation", "encounter.service-provider=org1", {"o1"}),
    ("Observation", "patient.organization.name=central", {"o3"}),
    ("Encounter", "patient.gender=male", set()),
    ("Patient", "_has:Observation:patient:code=1234-5", {"pA", "pB"}),
    ("Patient", "_has:Observation:patient:code=8867-4", {"pA"}),
    ("Patient", "_has:Observation:patient:status=cancelled", set()),
    ("Patient", "_has:Observation:subject:_has:Provenance:target:agent=pr1", {"pA"}),
    ("Patient", "_has:Observation:patient:code=1234-5&gender=male", {"pB"}),
    ("Practitioner", "_has:Encounter:practitioner:status=finished", {"pr1"}),
    ("Patient", "_has:Observation:nonsense:code=1", E400),
]

ALL = TOKEN + BLIND + STRING + DATE + REFERENCE + QUANTITY + SPECIAL + CHAIN_HAS


@pytest.mark.parametrize(("rtype", "query", "expected"), ALL, ids=[f"{c[0]}?{c[1]}" for c in ALL])
def test_search(world_store: Store, rtype: str, query: str, expected: set[str] | str) -> None:
    if expected == E400:
        with pytest.raises(BadRequest) as err:
            world_store.search(rtype, query)
        assert err.value.status == 400
        assert err.value.expression, "the error names the parameter"
        return
    result = world_store.search(rtype, query + "&_count=100")
    assert set(result.ids) == expected
    assert result.total == len(expected)
