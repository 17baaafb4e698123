"""Pure mapping of stored FHIR R4 resources to extract rows (no database, no web).

Which FHIR element feeds which extract column is the contract with ingestion's mappers;
docs/oversight.md has the table (Patient, EpisodeOfCare "attachment", Encounter,
Condition, MedicationDispense, Observation "laboratory", DiagnosticReport (the lab order a
claim bills), Practitioner, PractitionerRole, Organization, Claim, PaymentReconciliation).

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
EXT_BASE = "https://usmis.kz/fhir/StructureDefinition/"
EXT_EMIGRATION = EXT_BASE + "emigration-date"
EXT_DECEASED = EXT_BASE + "deceased-date"
SOURCE_RECORD = "https://usmis.kz/source/"

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
    """The id a reference names: ``Type/id``, or a logical reference's identifier value
    (ingestion refers to organisations by BIN and practitioners by registry id)."""
    if not isinstance(ref, dict):
        return None
    value = ref.get("reference")
    if isinstance(value, str) and "/" in value:
        kind, _, rid = value.rpartition("/")
        if rtype and not kind.endswith(rtype):
            return None
        return rid or None
    ident = ref.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        return str(ident["value"])
    return None


def _ext(res: dict[str, Any], name: str) -> Any:
    """The value of the USMIS extension ``…/StructureDefinition/<name>`` (any value[x])."""
    url = EXT_BASE + name
    for ext in res.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            for k, v in ext.items():
                if k.startswith("value"):
                    return v
    return None


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
               ) -> dict[str, list[Row]]:
    """Claim lines (one per Claim.item) and what an inpatient or drug claim tells: the stay,
    the dispensation and the claim's diagnoses."""
    base = _base(res, "claim")
    out: dict[str, list[Row]] = {"claims": [], "stays": [], "dispensations": [],
                                 "diagnoses": []}
    kind = {"institutional": "stay", "pharmacy": "drug", "professional": "service",
            "oral": "service", "vision": "service"}.get(_code(res.get("type")) or "", "service")
    person = person_of(_ref_id(res.get("patient"), "Patient"))
    provider = org_of(_ref_id(res.get("provider"), "Organization"))
    practitioner = None
    for member in res.get("careTeam") or []:
        practitioner = _ref_id((member or {}).get("provider"), "Practitioner")
        if practitioner:
            break
    # the service's record in the system that holds it (supportingInfo "source-record")
    record_id = None
    for info in res.get("supportingInfo") or []:
        ident = ((info or {}).get("valueReference") or {}).get("identifier") or {}
        system = str(ident.get("system") or "")
        if system.startswith(SOURCE_RECORD) and ident.get("value"):
            record_id = f"{system[len(SOURCE_RECORD):]}|{ident['value']}"
            break
    billing = record_id.split("|")[0] if record_id else base["source_system"]
    items = [i for i in res.get("item") or [] if isinstance(i, dict)]
    first_day = None
    for n, item in enumerate(items, 1):
        concept = item.get("productOrService")
        code = _code(concept, TARIFF) or _code(concept, ATC) or _code(concept)
        kind_i = "lab" if kind == "service" and code and code.startswith("B") else kind
        qty = (item.get("quantity") or {}).get("value", 1)
        net = (item.get("net") or {}).get("value")
        if net is None:
            unit = (item.get("unitPrice") or {}).get("value", 0)
            net = float(unit or 0) * float(qty or 1)
        period = item.get("servicedPeriod") or {}
        served = _day(item.get("servicedDate")) or _day(period.get("start"))
        first_day = first_day or served
        suffix = f"#{n}" if len(items) > 1 else ""
        claim_id = f"{base['source_system']}|{base['source_record_id']}{suffix}"
        record_type = {"stay": "stay", "drug": "dispensation"}.get(kind_i, "encounter")
        line_record = record_id or claim_id
        out["claims"].append({
            **base, "source_record_id": base["source_record_id"] + suffix,
            "claim_id": claim_id, "person_key": person, "provider_id": provider,
            "practitioner_id": practitioner, "service_date": served, "code": code,
            "kind": kind_i, "quantity": float(qty or 1), "amount": float(net or 0),
            "record_type": record_type, "record_id": line_record, "billing_system": billing,
        })
        # The stay or dispensation a claim line bills is the same source record the
        # clinical feed (Encounter, MedicationDispense) carries: keyed by the bare record id
        # so that store.merge_records joins the two instead of counting the record twice.
        bare = line_record.split("|", 1)[1] if "|" in line_record else line_record
        if kind_i == "stay" and served:
            out["stays"].append({**base, "source_record_id": bare,
                                 "source_system": billing, "stay_id": line_record,
                                 "person_key": person, "org_id": provider,
                                 "admit_date": served,
                                 "discharge_date": _day(period.get("end")) or served,
                                 "case_group": code})
        if kind_i == "drug":
            days = _ext(item, "days-supply")
            out["dispensations"].append({
                **base, "source_record_id": bare, "source_system": billing,
                "dispensation_id": line_record, "person_key": person, "org_id": provider,
                "practitioner_id": practitioner, "dispense_date": served, "atc": code,
                "quantity": float(qty or 1), "days_supply": int(days) if days else None})
    for n, dx in enumerate(res.get("diagnosis") or []):
        icd = _code((dx or {}).get("diagnosisCodeableConcept"), ICD10)
        if icd:
            rec = f"{base['source_record_id']}#dx{n}"
            out["diagnoses"].append({**base, "source_record_id": rec,
                                     "diagnosis_id": f"{base['source_system']}|{rec}",
                                     "person_key": person, "org_id": provider,
                                     "diagnosis_date": first_day, "icd10": icd})
    return out


def _money(value: Any) -> float | None:
    """A Money's (or a bare number's) value in tenge."""
    if isinstance(value, dict):
        value = value.get("value")
    return float(value) if isinstance(value, int | float) else None


def payment_rows(res: dict[str, Any], org_of: Callable[[str | None], str | None],
                 claim_of: Callable[[str], str | None]) -> list[Row]:
    """PaymentReconciliation → payments: one row per ``detail`` naming a paid claim (kind
    'claim'), or, without details, the capitation payment the fund_capitation mapping
    writes (requestor = the polyclinic's BIN, period.start / paymentDate = the month,
    extensions attached-count and capitation-rate).  A detail's ``request`` names the claim
    by its source identifier or as ``Claim/<id>``, which ``claim_of`` turns into the
    claim's ``claim_id``."""
    base = _base(res, "payment")
    pid = f"{base['source_system']}|{base['source_record_id']}"
    provider = org_of(_ref_id(res.get("requestor"), "Organization"))
    paid = _day(res.get("paymentDate"))
    details = [d for d in res.get("detail") or [] if isinstance(d, dict)]
    if not details:
        count = _ext(res, "attached-count")
        month = _day((res.get("period") or {}).get("start")) or paid
        return [{**base, "payment_id": pid, "kind": "capitation", "claim_id": None,
                 "provider_id": provider,
                 "period_month": month.replace(day=1) if month else None, "paid_date": paid,
                 "amount": _money(res.get("paymentAmount")),
                 "attached_count": int(count) if isinstance(count, int | float) else None,
                 "rate": _money(_ext(res, "capitation-rate"))}]
    out = []
    for n, detail in enumerate(details, 1):
        rec = f"{base['source_record_id']}#{n}"
        out.append({**base, "source_record_id": rec,
                    "payment_id": f"{base['source_system']}|{rec}", "kind": "claim",
                    "claim_id": _claim_ref(detail.get("request"), claim_of),
                    "provider_id": org_of(_ref_id(detail.get("payee"), "Organization"))
                    or provider,
                    "period_month": None, "paid_date": _day(detail.get("date")) or paid,
                    "amount": _money(detail.get("amount")), "attached_count": None,
                    "rate": None})
    return out


def _claim_ref(ref: Any, claim_of: Callable[[str], str | None]) -> str | None:
    ident = ref.get("identifier") if isinstance(ref, dict) else None
    system = str((ident or {}).get("system") or "")
    if system.startswith(SOURCE_PREFIX) and (ident or {}).get("value"):
        return f"{system[len(SOURCE_PREFIX):].split('/')[0]}|{(ident or {})['value']}"
    rid = _ref_id({"reference": ref.get("reference")}, "Claim") if isinstance(ref, dict) else None
    return claim_of(rid) if rid else None


def claim_key(res: dict[str, Any]) -> str:
    """The ``claim_id`` a Claim's lines carry (``system|record``; lines of a claim with
    several items add ``#n``)."""
    base = _base(res, "claim")
    return f"{base['source_system']}|{base['source_record_id']}"


def life_event_rows(res: dict[str, Any], person_of: PersonOf) -> list[Row]:
    """A registry's life event (Observation coded in https://usmis.kz/cs/life-event)."""
    event = _code(res.get("code"), "https://usmis.kz/cs/life-event")
    when = _day(res.get("effectiveDateTime"))
    if event not in ("emigration", "death", "birth") or when is None:
        return []
    base = _base(res, "life-event")
    return [{**base, "event_id": f"{base['source_system']}|{base['source_record_id']}",
             "person_key": person_of(_ref_id(res.get("subject"), "Patient")), "event": event,
             "event_date": when}]


def tariff_row(res: dict[str, Any]) -> Row | None:
    """ChargeItemDefinition → tariff (extensions as written by the reg_tariffs mapping)."""
    code = _code(res.get("code"), TARIFF)
    if not code:
        return None
    price = None
    for group in res.get("propertyGroup") or []:
        for comp in (group or {}).get("priceComponent") or []:
            if (comp or {}).get("type") == "base":
                price = ((comp.get("amount") or {}).get("value"))
    category = _ext(res, "tariff-category") or ""
    kind = {"visit": "service", "screening": "service", "procedure": "service", "lab": "lab",
            "inpatient_case": "case_group", "capitation": "capitation"}.get(category, "service")
    return {**_base(res, "tariff"), "code": code, "kind": kind, "price": price,
            "std_minutes": _ext(res, "standard-minutes"), "sex": _ext(res, "allowed-sex") or None,
            "min_age": _ext(res, "min-age"), "max_age": _ext(res, "max-age"),
            "max_units_per_day": _ext(res, "max-units-per-day"),
            "expensive": bool(_ext(res, "expensive-case-group")) if kind == "case_group"
            else None,
            "case_family": code.rstrip("X") if kind == "case_group" else None}


def medication_rows(res: dict[str, Any]) -> tuple[list[Row], list[Row]]:
    """MedicationKnowledge → (drug tariff rows, indication rows)."""
    atc = _code(res.get("code"), ATC)
    if not atc:
        return [], []
    base = _base(res, "drug")
    indications = []
    for guide in res.get("administrationGuidelines") or []:
        icd = _code((guide or {}).get("indicationCodeableConcept"), ICD10)
        if icd:
            indications.append({**base, "source_record_id": f"{atc}:{icd}", "atc": atc,
                                "icd10_prefix": icd})
    if indications:
        return [], indications
    strength, max_mg = _ext(res, "strength-mg"), _ext(res, "max-daily-dose-mg")
    price = None
    for cost in res.get("cost") or []:
        price = ((cost or {}).get("cost") or {}).get("value")
    return [{**base, "code": atc, "kind": "drug", "price": price,
             "max_daily_dose": (float(max_mg) / float(strength)) if strength and max_mg
             else None}], []


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
        stay_id = f"{base['source_system']}|{base['source_record_id']}"  # as claims name it
        stays.append({**base, "stay_id": stay_id, "person_key": person, "org_id": org,
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
    base = _base(res, "dispense")
    return [{**base, "dispensation_id": f"{base['source_system']}|{base['source_record_id']}",
             "person_key": person_of(_ref_id(res.get("subject"), "Patient")), "org_id": org,
             "practitioner_id": None,
             "dispense_date": _day(res.get("whenHandedOver")),
             "atc": _code(res.get("medicationCodeableConcept"), ATC)
             or _code(res.get("medicationCodeableConcept")),
             "quantity": (res.get("quantity") or {}).get("value"),
             "days_supply": (res.get("daysSupply") or {}).get("value")}]


def report_record(res: dict[str, Any], person_of: PersonOf) -> tuple[str, str | None]:
    """A lab's DiagnosticReport: its record key (``system|order number``) and its person.

    Fund claims for a lab test name the lab's *order* (the report), while each result is
    an Observation of its own (``order-1``, ``order-2`` …); the report is what joins the
    claim to the person the patient index linked on full demographics.  No extract row.
    """
    base = _base(res, "report")
    return (f"{base['source_system']}|{base['source_record_id']}",
            person_of(_ref_id(res.get("subject"), "Patient")))


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
    base = _base(res, "attachment")
    return [{**base, "attachment_id": f"{base['source_system']}|{base['source_record_id']}",
             "person_key": person_of(_ref_id(res.get("patient"), "Patient")),
             "org_id": org_of(_ref_id(res.get("managingOrganization"), "Organization")),
             "start_date": _day(period.get("start")), "end_date": _day(period.get("end"))}]


def practitioner_rows(res: dict[str, Any]) -> tuple[Row, list[Row]]:
    base = _base(res, "practitioner")
    death = None
    for ext in res.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == EXT_DECEASED:
            death = _day(ext.get("valueDate") or ext.get("valueDateTime"))
    pid = base["source_record_id"]  # the registry's practitioner id, as claims name them
    prac = {**base, "practitioner_id": pid, "speciality": None, "death_date": death}
    licences = []
    for n, q in enumerate(res.get("qualification") or []):
        if not isinstance(q, dict):
            continue
        ids = [i for i in q.get("identifier") or [] if isinstance(i, dict)]
        if ids and not any(i.get("system") == LICENCE for i in ids):
            continue
        period = q.get("period") or {}
        licences.append({**base, "source_record_id": f"{base['source_record_id']}#lic{n}",
                         "licence_id": f"{pid}#{n}", "practitioner_id": pid,
                         "valid_from": _day(period.get("start")) or date(1900, 1, 1),
                         "valid_to": _day(period.get("end"))})
    return prac, licences


def role_rows(res: dict[str, Any], org_of: Callable[[str | None], str | None],
              prac_of: Callable[[str | None], str | None]) -> list[Row]:
    period = res.get("period") or {}
    return [{**_base(res, "practitionerrole"), "employment_id": res.get("id"),
             "practitioner_id": prac_of(_ref_id(res.get("practitioner"), "Practitioner")),
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
