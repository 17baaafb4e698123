"""The analytical extract's tables (Parquet), one pyarrow schema each.

Why a fixed schema: the rules are SQL written against these column names, and two builders
(the store and, for development, a synthetic nation) must produce exactly the same shape.
No column holds a direct identifier: people appear only as ``person_key`` — a keyed HMAC of
the patient index's person key under the oversight key (distinct from the vault's keys) —
with birth year and month, sex, region and life-event dates.  Every row names the source
system and the source's own record id, so an investigator can go back to the evidence.
"""

from __future__ import annotations

import pyarrow as pa

_STR = pa.string()
_DATE = pa.date32()
_INT = pa.int32()
_NUM = pa.float64()

# Columns every table carries: where the row came from and when it last changed there.
PROVENANCE = [
    pa.field("source_system", _STR),
    pa.field("source_record_id", _STR),
    pa.field("last_updated", pa.timestamp("us")),
]


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t in fields] + PROVENANCE)


TABLES: dict[str, pa.Schema] = {
    # One row per linked person: no name, IIN, birth day, address or phone.
    "persons": _schema(
        ("person_key", _STR),
        ("sex", _STR),  # 'M' | 'F' | NULL
        ("birth_year", _INT),
        ("birth_month", _INT),
        ("region", _STR),  # oblast / city of residence
    ),
    # Registered life events: 'death', 'emigration', 'birth'.
    "life_events": _schema(
        ("event_id", _STR),
        ("person_key", _STR),
        ("event", _STR),
        ("event_date", _DATE),
    ),
    # Attachment to a primary-care organisation: the basis of per-capita funding.
    "attachments": _schema(
        ("attachment_id", _STR),
        ("person_key", _STR),
        ("org_id", _STR),
        ("start_date", _DATE),
        ("end_date", _DATE),  # NULL = still attached
    ),
    "encounters": _schema(
        ("encounter_id", _STR),
        ("person_key", _STR),
        ("org_id", _STR),
        ("practitioner_id", _STR),
        ("encounter_date", _DATE),
        ("encounter_class", _STR),  # 'AMB' | 'IMP' | 'EMER'
        ("service_code", _STR),
    ),
    # Inpatient stays; admit/discharge are dates (times are not needed by any rule).
    "stays": _schema(
        ("stay_id", _STR),
        ("person_key", _STR),
        ("org_id", _STR),
        ("admit_date", _DATE),
        ("discharge_date", _DATE),
        ("case_group", _STR),
    ),
    "diagnoses": _schema(
        ("diagnosis_id", _STR),
        ("person_key", _STR),
        ("org_id", _STR),
        ("diagnosis_date", _DATE),
        ("icd10", _STR),
    ),
    "dispensations": _schema(
        ("dispensation_id", _STR),
        ("person_key", _STR),
        ("org_id", _STR),
        ("practitioner_id", _STR),  # prescriber
        ("dispense_date", _DATE),
        ("atc", _STR),
        ("quantity", _NUM),  # dosage units
        ("days_supply", _INT),
    ),
    "lab_tests": _schema(
        ("lab_test_id", _STR),
        ("person_key", _STR),
        ("org_id", _STR),
        ("test_date", _DATE),
        ("loinc", _STR),
    ),
    "practitioners": _schema(
        ("practitioner_id", _STR),
        ("speciality", _STR),
        ("death_date", _DATE),
    ),
    "licences": _schema(
        ("licence_id", _STR),
        ("practitioner_id", _STR),
        ("valid_from", _DATE),
        ("valid_to", _DATE),  # NULL = open-ended
    ),
    "employments": _schema(
        ("employment_id", _STR),
        ("practitioner_id", _STR),
        ("org_id", _STR),
        ("start_date", _DATE),
        ("end_date", _DATE),
    ),
    "organizations": _schema(
        ("org_id", _STR),
        ("org_kind", _STR),  # polyclinic | hospital | lab | pharmacy | ...
        ("region", _STR),
        ("org_name", _STR),  # an organisation's name is not personal data
    ),
    # The price list: services, lab tests, drugs, case groups and the capitation rate.
    "tariffs": _schema(
        ("code", _STR),
        ("kind", _STR),  # service | lab | drug | case_group | capitation
        ("price", _NUM),  # tenge per unit (capitation: per person-month)
        ("std_minutes", _NUM),
        ("sex", _STR),  # only this sex may receive it; NULL = any
        ("min_age", _INT),
        ("max_age", _INT),
        ("max_units_per_day", _NUM),
        ("max_daily_dose", _NUM),  # drugs: dosage units per day
        ("expensive", pa.bool_()),  # case groups: the costly end of a family
        ("case_family", _STR),  # case groups that an upcoder chooses between
    ),
    # Which diagnoses indicate a drug (ATC prefix → ICD-10 prefix).
    "indications": _schema(
        ("atc", _STR),
        ("icd10_prefix", _STR),
    ),
    # Claim lines submitted to the social health insurance fund.
    "claims": _schema(
        ("claim_id", _STR),
        ("person_key", _STR),
        ("provider_id", _STR),
        ("practitioner_id", _STR),
        ("service_date", _DATE),
        ("code", _STR),
        ("kind", _STR),  # service | lab | drug | stay
        ("quantity", _NUM),
        ("amount", _NUM),  # tenge claimed
        ("record_type", _STR),  # encounter | stay | dispensation | lab_test
        ("record_id", _STR),  # the clinical record the claim is for
        ("billing_system", _STR),  # the provider system that produced the claim
    ),
    # Money the fund paid: for a claim (kind 'claim', claim_id set) or per-capita funding of
    # a polyclinic for one month (kind 'capitation': attached_count people × rate).
    "payments": _schema(
        ("payment_id", _STR),
        ("kind", _STR),  # claim | capitation
        ("claim_id", _STR),  # the claim paid (as claims.claim_id names it); NULL: capitation
        ("provider_id", _STR),  # BIN of the organisation paid
        ("period_month", _DATE),  # capitation: first day of the month paid for
        ("paid_date", _DATE),
        ("amount", _NUM),  # tenge paid
        ("attached_count", _INT),  # capitation: people attached on the month's first day
        ("rate", _NUM),  # capitation: tenge per person-month
    ),
}

# Direct identifiers must never appear as a column name in the extract (checked in tests
# and by the writers).
FORBIDDEN_COLUMNS = frozenset(
    {"iin", "name", "family", "given", "surname", "phone", "telecom", "address", "birth_date"}
)


def empty_table(name: str) -> pa.Table:
    return TABLES[name].empty_table()
