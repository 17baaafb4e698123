"""FHIR R4 resources and bundles of the polyclinic EHRs (dicts, serialised by orjson).

Transaction bundles use conditional PUT with ``urn:uuid`` full URLs and references;
batch bundles use conditional PUT too, but refer to other entries by logical reference
(``Reference.identifier``), because references between batch entries are not resolved
(FHIR R4 http.html#brules).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from usmis.synth.views import View

SID = "https://usmis.kz/sid/source/"
IIN = "https://usmis.kz/sid/iin"
BIN = "https://usmis.kz/sid/bin"
PRACT = "https://usmis.kz/sid/source/reg_practitioners/practitioner"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
TARIFF = "https://usmis.kz/cs/tariff"
UCUM = "http://unitsofmeasure.org"


def _uuid(n: int) -> str:
    """A UUID string of a 128-bit number (deterministic ids for fullUrl and Bundle.id)."""
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_DAY_ISO: dict[int, str] = {}


def iso_dt(day: int, minute: int) -> str:
    d = _DAY_ISO.get(day)
    if d is None:
        d = _DAY_ISO[day] = date.fromordinal(day).isoformat()
    return f"{d}T{minute // 60:02d}:{minute % 60:02d}:00+05:00"


def ident(source_id: str, kind: str, value: str) -> dict[str, str]:
    return {"system": f"{SID}{source_id}/{kind}", "value": value}


class BundleBuilder:
    """Collects the entries of one bundle; ``ref`` returns how others point at an entry."""

    def __init__(self, source_id: str, bundle_type: str, src_index: int, seq: int) -> None:
        self.source_id = source_id
        self.type = bundle_type
        self.entries: list[dict[str, Any]] = []
        self.kinds: list[str] = []
        self._base = (src_index << 100) | (seq << 8)
        self._n = 0
        self.id = _uuid(self._base | 0xFF)

    def add(self, resource: dict[str, Any], kind: str, value: str) -> dict[str, Any]:
        """Add ``resource`` (conditional PUT on its source identifier); return a reference."""
        rtype = resource["resourceType"]
        system = f"{SID}{self.source_id}/{kind}"
        entry: dict[str, Any] = {
            "resource": resource,
            "request": {"method": "PUT", "url": f"{rtype}?identifier={system}|{value}"},
        }
        if self.type == "transaction":
            full = f"urn:uuid:{_uuid(self._base | self._n)}"
            self._n += 1
            entry = {"fullUrl": full, **entry}
            ref: dict[str, Any] = {"reference": full}
        else:
            ref = {"type": rtype, "identifier": {"system": system, "value": value}}
        self.entries.append(entry)
        self.kinds.append(rtype)
        return ref

    def build(self, timestamp: str) -> dict[str, Any]:
        return {"resourceType": "Bundle", "id": self.id, "type": self.type,
                "timestamp": timestamp, "entry": self.entries}


def patient(v: View, address: str, city: str, region: str, phone: str,
            deceased: int | None = None) -> dict[str, Any]:
    ids = [ident(v.source, "patient", v.local_id)]
    if v.iin:
        ids.append({"system": IIN, "value": v.iin})
    given = [v.given] + ([v.patronymic] if v.patronymic else [])
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": ids,
        "name": [{"use": "official", "family": v.surname, "given": given}],
        "gender": "male" if v.sex == "M" else "female",
        "birthDate": date.fromordinal(v.birth).isoformat(),
        "address": [{"line": [address], "city": city, "state": region, "country": "KZ"}],
    }
    if phone:
        res["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
    if deceased is not None:
        res["deceasedDateTime"] = iso_dt(deceased, 0)
    return res


def practitioner_ref(pid: str) -> dict[str, Any]:
    return {"type": "Practitioner", "identifier": {"system": PRACT, "value": pid}}


def encounter(source_id: str, enc_id: str, subject: dict[str, Any], code: str, pract: str,
              org_bin: str, start: str, end: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "identifier": [ident(source_id, "encounter", enc_id)],
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "serviceType": {"coding": [{"system": TARIFF, "code": code}]},
        "subject": subject,
        "participant": [{"individual": practitioner_ref(pract)}],
        "period": {"start": start, "end": end},
        "serviceProvider": {"type": "Organization",
                            "identifier": {"system": BIN, "value": org_bin}},
    }


def condition(source_id: str, cid: str, subject: dict[str, Any], enc: dict[str, Any], icd: str,
              recorded: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "identifier": [ident(source_id, "condition", cid)],
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "code": "confirmed"}]},
        "code": {"coding": [{"system": ICD10, "code": icd}]},
        "subject": subject,
        "encounter": enc,
        "recordedDate": recorded,
    }


def observation(source_id: str, oid: str, subject: dict[str, Any], enc: dict[str, Any],
                loinc: str, display: str, value: float, unit: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [ident(source_id, "observation", oid)],
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": loinc, "display": display}]},
        "subject": subject,
        "encounter": enc,
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def procedure(source_id: str, prid: str, subject: dict[str, Any], enc: dict[str, Any], code: str,
              pract: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "identifier": [ident(source_id, "procedure", prid)],
        "status": "completed",
        "code": {"coding": [{"system": TARIFF, "code": code}]},
        "subject": subject,
        "encounter": enc,
        "performedDateTime": when,
        "performer": [{"actor": practitioner_ref(pract)}],
    }


def medication_request(source_id: str, rx_id: str, subject: dict[str, Any],
                       enc: dict[str, Any], atc: str, name: str, form: str, per_day: int,
                       quantity: int, days: int, icd: str, pract: str,
                       authored: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "identifier": [ident(source_id, "prescription", rx_id)],
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": ATC, "code": atc, "display": name}]},
        "subject": subject,
        "encounter": enc,
        "authoredOn": authored,
        "requester": practitioner_ref(pract),
        "reasonCode": [{"coding": [{"system": ICD10, "code": icd}]}],
        "dosageInstruction": [{
            "text": f"{per_day} {form} в день",
            "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
        }],
        "dispenseRequest": {
            "quantity": {"value": quantity, "unit": form},
            "expectedSupplyDuration": {"value": days, "unit": "d", "system": UCUM, "code": "d"},
        },
    }
