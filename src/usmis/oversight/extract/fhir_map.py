"""Pure mapping of stored FHIR R4 resources to extract rows (no database, no web).

Which FHIR element feeds which extract column is the contract with ingestion's mappers;
docs/oversight.md has the table (Patient, EpisodeOfCare "attachment", Encounter,
Condition, MedicationDispense, Observation "laboratory", Practitioner, PractitionerRole,
Organization, Claim).

Direct identifiers are never copied: only the listed elements are read, birth dates are
cut to year and month, and people are referred to by the pseudonym the caller supplies.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
TARIFF = "https://usmis.kz/cs/tariff"
LICENCE = "https://usmis.kz/sid/licence"
BIN = "https://usmis.kz/sid/bin"
SOURCE_PREFIX = "https://usmis.kz/sid/source/"
EXT_EMIGRATION = "https://usmis.kz/fhir/StructureDefinition/emigration-date"
EXT_DECEASED = "https://usmis.kz/fhir/StructureDefinition/deceased-date"

Row = dict[str, Any]
PersonOf = Callable[[str | None], str | None]  # "Patient/<id>" → pseudonymous person key


def _day(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _ref_id(ref: Any, rtype: str | None = None) -> str | None:
    if not isinstance(ref, dict):
        return None
    value = ref.get("reference")
    if not isinstance(value, str) or "/" not in value:
        return None
    kind, _, rid = value.rpartition("/")
    if rtype and not kind.endswith(rtype):
        return None
    return rid or None


def _code(concept: Any, system: str | None = None) -> str | None:
    if not isinstance(concept, dict):
        return None
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    for c in codings:
        if system is None or c.get("system") == system:
            code = c.get("code")
            if isinstance(code, str):
                return code
    return None


def provenance(res: dict[str, Any], kind: str) -> tuple[str, str]:
    """(source system, the source's own record id): from the source identifier if any."""
    for ident in res.get("identifier") or []:
        system = ident.get("system") if isinstance(ident, dict) else None
        if isinstance(system, str) and system.startswith(SOURCE_PREFIX):
            source = system[len(SOURCE_PREFIX):].split("/")[0]
            return source, str(ident.get("value"))
    meta = res.get("meta") or {}
    source = str(meta.get("source") or "").rsplit("/", 1)[-1] or "usmis"
    return source, f"{res.get('resourceType', kind)}/{res.get('id')}"


def _base(res: dict[str, Any], kind: str) -> Row:
    source, record = provenance(res, kind)
    return {"source_system": source, "source_record_id": record,
            "last_updated": None}


def patient_rows(res: dict[str, Any], person_key: str) -> tuple[Row, list[Row]]:
    birth = res.get("birthDate")
    year = month = None
    if isinstance(birth, str) and len(birth) >= 4 and birth[:4].isdigit():
        year = int(birth[:4])
        month = int(birth[5:7]) if len(birth) >= 7 and birth[5:7].isdigit() else None
    sex = {"male": "M", "female": "F"}.get(str(res.get("gender")))
    region = None
    for addr in res.get("address") or []:
        if isinstance(addr, dict) and addr.get("state"):
            region = str(addr["state"])
            break
    base = _base(res, "patient")
    person = {**base, "person_key": person_key, "sex": sex, "birth_year": year,
              "birth_month": month, "region": region}
    events: list[Row] = []
    death = _day(res.get("deceasedDateTime"))
    if death:
        events.append({**base, "event_id": f"death:{res.get('id')}", "person_key": person_key,
                       "event": "death", "event_date": death,
                       "source_record_id": f"{base['source_record_id']}#death"})
    for ext in res.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == EXT_EMIGRATION:
            when = _day(ext.get("valueDate") or ext.get("valueDateTime"))
            if when:
                events.append({**base, "event_id": f"emigration:{res.get('id')}",
                               "person_key": person_key, "event": "emigration",
                               "event_date": when,
                               "source_record_id": f"{base['source_record_id']}#emigration"})
    return person, events


def claim_rows(res: dict[str, Any], person_of: PersonOf, org_of: Callable[[str | None], str | None]
               ) -> list[Row]:
    """One extract claim line per Claim.item."""
    base = _base(res, "claim")
    kind = {"institutional": "stay", "pharmacy": "drug", "professional": "service",
            "oral": "service", "vision": "service"}.get(_code(res.get("type")) or "", "service")
    person = person_of(_ref_id(res.get("patient"), "Patient"))
    provider = org_of(_ref_id(res.get("provider"), "Organization"))
    practitioner = None
    for member in res.get("careTeam") or []:
        practitioner = _ref_id((member or {}).get("provider"), "Practitioner")
        if practitioner:
            break
    items = [i for i in res.get("item") or [] if isinstance(i, dict)]
    out = []
    for n, item in enumerate(items, 1):
        code = _code(item.get("productOrService"), TARIFF) or _code(item.get("productOrService"))
        if kind == "service" and code and code.startswith("B"):
            kind_i = "lab"
        else:
            kind_i = kind
        qty = (item.get("quantity") or {}).get("value", 1)
        net = (item.get("net") or {}).get("value")
        if net is None:
            unit = (item.get("unitPrice") or {}).get("value", 0)
            net = float(unit or 0) * float(qty or 1)
        served = _day(item.get("servicedDate")) or _day(
            (item.get("servicedPeriod") or {}).get("start"))
        record_type = {"stay": "stay", "drug": "dispensation"}.get(kind_i, "encounter")
        encounters = item.get("encounter") or []
        record_id = _ref_id(encounters[0]) if encounters else None
        suffix = f"#{n}" if len(items) > 1 else ""
        out.append({
            **base, "source_record_id": base["source_record_id"] + suffix,
            "claim_id": f"{base['source_system']}|{base['source_record_id']}{suffix}",
            "person_key": person, "provider_id": provider, "practitioner_id": practitioner,
            "service_date": served, "code": code, "kind": kind_i, "quantity": float(qty or 1),
            "amount": float(net or 0), "record_type": record_type, "record_id": record_id,
            "billing_system": base["source_system"],
        })
    return out


def encounter_rows(res: dict[str, Any], person_of: PersonOf,
                   org_of: Callable[[str | None], str | None]) -> tuple[list[Row], list[Row]]:
    """(encounters, stays): an inpatient Encounter is also a stay."""
    base = _base(res, "encounter")
    period = res.get("period") or {}
    start, end = _day(period.get("start")), _day(period.get("end"))
    cls = (res.get("class") or {}).get("code")
    person = person_of(_ref_id(res.get("subject"), "Patient"))
    org = org_of(_ref_id(res.get("serviceProvider"), "Organization"))
    practitioner = None
    for part in res.get("participant") or []:
        practitioner = _ref_id((part or {}).get("individual"), "Practitioner")
        if practitioner:
            break
    types = res.get("type") or []
    code = _code(types[0]) if types else None
    enc = {**base, "encounter_id": res.get("id"), "person_key": person, "org_id": org,
           "practitioner_id": practitioner, "encounter_date": start, "encounter_class": cls,
           "service_code": code}
    stays = []
    if cls == "IMP" and start:
        stays.append({**base, "stay_id": res.get("id"), "person_key": person, "org_id": org,
                      "admit_date": start, "discharge_date": end or start, "case_group": code})
    return [enc], stays


def condition_rows(res: dict[str, Any], person_of: PersonOf) -> list[Row]:
    code = _code(res.get("code"), ICD10) or _code(res.get("code"))
    when = _day(res.get("onsetDateTime")) or _day(res.get("recordedDate"))
    if not code:
        return []
    return [{**_base(res, "condition"), "diagnosis_id": res.get("id"),
             "person_key": person_of(_ref_id(res.get("subject"), "Patient")),
             "org_id": None, "diagnosis_date": when, "icd10": code}]


def dispense_rows(res: dict[str, Any], person_of: PersonOf,
                  org_of: Callable[[str | None], str | None]) -> list[Row]:
    org = None
    for perf in res.get("performer") or []:
        org = org_of(_ref_id((perf or {}).get("actor"), "Organization"))
        if org:
            break
    return [{**_base(res, "dispense"), "dispensation_id": res.get("id"),
             "person_key": person_of(_ref_id(res.get("subject"), "Patient")), "org_id": org,
             "practitioner_id": None,
             "dispense_date": _day(res.get("whenHandedOver")),
             "atc": _code(res.get("medicationCodeableConcept"), ATC)
             or _code(res.get("medicationCodeableConcept")),
             "quantity": (res.get("quantity") or {}).get("value"),
             "days_supply": (res.get("daysSupply") or {}).get("value")}]


def observation_rows(res: dict[str, Any], person_of: PersonOf,
                     org_of: Callable[[str | None], str | None]) -> list[Row]:
    cats = {_code(c) for c in res.get("category") or []}
    if "laboratory" not in cats:
        return []
    org = None
    for perf in res.get("performer") or []:
        org = org_of(_ref_id(perf, "Organization"))
        if org:
            break
    return [{**_base(res, "observation"), "lab_test_id": res.get("id"),
             "person_key": person_of(_ref_id(res.get("subject"), "Patient")), "org_id": org,
             "test_date": _day(res.get("effectiveDateTime")) or _day(res.get("issued")),
             "loinc": _code(res.get("code"), LOINC)}]


def attachment_rows(res: dict[str, Any], person_of: PersonOf,
                    org_of: Callable[[str | None], str | None]) -> list[Row]:
    codes = {(_code(t) or "").lower() for t in res.get("type") or []}
    if not any("attach" in c for c in codes):
        return []
    period = res.get("period") or {}
    return [{**_base(res, "attachment"), "attachment_id": res.get("id"),
             "person_key": person_of(_ref_id(res.get("patient"), "Patient")),
             "org_id": org_of(_ref_id(res.get("managingOrganization"), "Organization")),
             "start_date": _day(period.get("start")), "end_date": _day(period.get("end"))}]


def practitioner_rows(res: dict[str, Any]) -> tuple[Row, list[Row]]:
    base = _base(res, "practitioner")
    death = None
    for ext in res.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == EXT_DECEASED:
            death = _day(ext.get("valueDate") or ext.get("valueDateTime"))
    prac = {**base, "practitioner_id": res.get("id"), "speciality": None, "death_date": death}
    licences = []
    for n, q in enumerate(res.get("qualification") or []):
        if not isinstance(q, dict):
            continue
        ids = [i for i in q.get("identifier") or [] if isinstance(i, dict)]
        if ids and not any(i.get("system") == LICENCE for i in ids):
            continue
        period = q.get("period") or {}
        licences.append({**base, "source_record_id": f"{base['source_record_id']}#lic{n}",
                         "licence_id": f"{res.get('id')}#{n}", "practitioner_id": res.get("id"),
                         "valid_from": _day(period.get("start")) or date(1900, 1, 1),
                         "valid_to": _day(period.get("end"))})
    return prac, licences


def role_rows(res: dict[str, Any], org_of: Callable[[str | None], str | None]) -> list[Row]:
    period = res.get("period") or {}
    return [{**_base(res, "practitionerrole"), "employment_id": res.get("id"),
             "practitioner_id": _ref_id(res.get("practitioner"), "Practitioner"),
             "org_id": org_of(_ref_id(res.get("organization"), "Organization")),
             "start_date": _day(period.get("start")) or date(1900, 1, 1),
             "end_date": _day(period.get("end"))}]


def organization_row(res: dict[str, Any]) -> Row:
    org_id = res.get("id")
    for ident in res.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") == BIN and ident.get("value"):
            org_id = ident["value"]
    types = res.get("type") or []
    region = None
    for addr in res.get("address") or []:
        if isinstance(addr, dict) and addr.get("state"):
            region = addr["state"]
    return {**_base(res, "organization"), "org_id": org_id,
            "org_kind": _code(types[0]) if types else None, "region": region,
            "org_name": res.get("name")}
