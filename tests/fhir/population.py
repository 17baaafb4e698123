"""A small synthetic population (mimesis, Kazakh locale, valid IINs) as FHIR bundles.

Used until/alongside ``usmis.synth``: each person is copied into every place a real
feed would copy them — narrative, Reference.display, a contained Patient, identifiers on
Claim and Coverage — so the raw-scan test proves none of those copies is stored plain.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from mimesis import Locale, Person

from usmis.mpi.iin import iin_check_digit

IIN = "https://usmis.kz/sid/iin"
OPERATORS = ["701", "702", "705", "747", "777"]


@dataclass(frozen=True)
class Citizen:
    iin: str
    family: str
    given: str
    phone: str
    birth: str
    sex: str


def make_iin(rng: random.Random, birth: str, sex: str) -> str:
    while True:
        y, m, d = birth.split("-")
        century = (1 if y.startswith("18") else 3 if y.startswith("19") else 5)
        prefix = f"{y[2:]}{m}{d}{century + (1 if sex == 'female' else 0)}{rng.randrange(10000):04d}"
        check = iin_check_digit(prefix)
        if check is not None:
            return prefix + str(check)


def population(n: int, seed: int = 7) -> list[Citizen]:
    rng = random.Random(seed)
    gen = Person(Locale.KK, seed=seed)
    out: list[Citizen] = []
    for _ in range(n):
        sex = rng.choice(["male", "female"])
        birth = f"{rng.randrange(1940, 2020)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        out.append(
            Citizen(
                iin=make_iin(rng, birth, sex),
                family=gen.last_name(),
                given=gen.first_name(),
                phone=f"+7{rng.choice(OPERATORS)}{rng.randrange(10**7):07d}",
                birth=birth,
                sex=sex,
            )
        )
    return out


def person_bundle(c: Citizen, i: int) -> dict[str, Any]:
    """Patient + Encounter + Observation (contained Patient) + Coverage + Claim, and a
    Condition, an Observation and a DocumentReference whose free text names the patient."""
    p, e, cov = (f"urn:uuid:00000000-0000-4000-8000-{i:06d}{k:06d}" for k in (1, 2, 3))
    display = f"{c.family} {c.given}"
    patient = {
        "resourceType": "Patient",
        "text": {"status": "generated",
                 "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{display}, ИИН {c.iin}</div>'},
        "identifier": [{"system": IIN, "value": c.iin}],
        "name": [{"family": c.family, "given": [c.given]}],
        "telecom": [{"system": "phone", "value": c.phone}],
        "gender": c.sex,
        "birthDate": c.birth,
        "address": [{"city": "Астана", "line": [f"{c.family} көшесі, {i}"]}],
    }
    encounter = {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": p, "display": display},
    }
    observation = {
        "resourceType": "Observation", "status": "final",
        "contained": [{"resourceType": "Patient", "id": "who",
                       "identifier": [{"system": IIN, "value": c.iin}],
                       "name": [{"family": c.family}], "telecom": [{"system": "phone",
                                                                     "value": c.phone}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}],
                 "text": f"pulse of {display}"},
        "subject": {"reference": p, "display": display},
        "performer": [{"reference": "#who"}],
        "encounter": {"reference": e},
        "valueQuantity": {"value": 70 + i % 20, "unit": "/min"},
    }
    coverage = {
        "resourceType": "Coverage", "status": "active",
        "identifier": [{"system": IIN, "value": c.iin}],
        "subscriberId": c.iin,
        "beneficiary": {"reference": p, "display": display},
        "payor": [{"display": "FSMS"}],
    }
    claim = {
        "resourceType": "Claim", "status": "active", "use": "claim",
        "identifier": [{"system": IIN, "value": c.iin}],
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                             "code": "professional"}]},
        "patient": {"reference": p, "display": display},
        "created": "2024-03-01",
        "provider": {"display": "Polyclinic 1"},
        "priority": {"coding": [{"code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": cov}}],
    }
    # free text that names the patient, where a clinician might write it
    condition = {
        "resourceType": "Condition", "subject": {"reference": p},
        "code": {"text": f"complaint of {display}"},
        "onsetString": f"{display} says: since the spring",
        "abatementString": f"{c.family} recovered",
    }
    note = {
        "resourceType": "Observation", "status": "final", "subject": {"reference": p},
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2",
                             "display": f"height of {display}"}]},
        "valueString": f"{c.family} {c.given} stood straight",
    }
    letter = {
        "resourceType": "DocumentReference", "status": "current", "subject": {"reference": p},
        "description": f"Discharge letter of {display}",
        "content": [{"attachment": {"contentType": "text/plain", "title": f"{c.family}"}}],
    }
    entries = []
    for full, res in ((p, patient), (e, encounter), (None, observation), (cov, coverage),
                      (None, claim), (None, condition), (None, note), (None, letter)):
        entry: dict[str, Any] = {"resource": res,
                                 "request": {"method": "POST", "url": res["resourceType"]}}
        if full:
            entry["fullUrl"] = full
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
