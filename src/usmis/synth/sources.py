"""The 31 source systems of the synthetic nation and their habits.

A source's habits are data, written to ``sources.json`` for the receiver: channel,
format, encoding, delimiter, date format, script of names, and for file sources the
column dictionary (column name → meaning).  Each file source maps the generator's
internal field keys onto its own column names, so no two extracts look alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HIS_IDS = ("his_astana", "his_almaty", "his_shymkent", "his_aktobe", "his_karaganda",
           "his_republic")
LAB_IDS = ("lab_invivo", "lab_olymp", "lab_kdl")
EHR_IDS = ("ehr_damumed", "ehr_medelement", "ehr_kmis", "ehr_tamos")
PHARMACY_IDS = ("pharm_europharma", "pharm_biosfera", "pharm_sadykhan", "pharm_zdravplus")


@dataclass(frozen=True)
class Source:
    id: str
    name: str
    kind: str
    channel: str  # mllp | fhir | file
    format: str  # hl7v2 | fhir-bundle | csv | tsv | ndjson
    encoding: str = "utf-8"
    delimiter: str | None = None
    date_format: str = "%Y-%m-%d"
    datetime_format: str = "%Y-%m-%dT%H:%M:%S"
    script: str = "cyrillic"  # cyrillic | cyrillic_ru | latin:<scheme>
    upper: bool = False
    sex_codes: tuple[str, str] = ("M", "F")
    decimal_comma: bool = False
    record_kind: str = ""
    id_column: str = ""
    patient_id_column: str = ""
    # (column name, internal key, meaning)
    columns: tuple[tuple[str, str, str], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    # probability that a patient record of this source has no IIN
    iin_missing: float = 0.02

    @property
    def ext(self) -> str:
        return {"hl7v2": "hl7", "fhir-bundle": "ndjson", "csv": "csv", "tsv": "tsv",
                "ndjson": "ndjson"}[self.format]

    def describe(self, files: list[str]) -> dict[str, Any]:
        """The entry of this source in ``sources.json``."""
        d: dict[str, Any] = {
            "id": self.id, "name": self.name, "kind": self.kind, "channel": self.channel,
            "format": self.format, "encoding": self.encoding, "delimiter": self.delimiter,
            "date_format": self.date_format, "datetime_format": self.datetime_format,
            "name_script": self.script, "sex_codes": {"male": self.sex_codes[0],
                                                      "female": self.sex_codes[1]},
            "decimal_separator": "," if self.decimal_comma else ".",
            "files": files,
        }
        if self.columns:
            d["record_kind"] = self.record_kind
            d["id_column"] = self.id_column
            d["patient_id_column"] = self.patient_id_column or None
            d["columns"] = {c: meaning for c, _, meaning in self.columns}
        d.update(self.extra)
        return d


def _cols(*spec: tuple[str, str, str]) -> tuple[tuple[str, str, str], ...]:
    return spec


_PAT_ID = "the source's own patient id (identifier system https://usmis.kz/sid/source/{sid}/patient)"
_IIN = "patient IIN as this system knows it (may be empty or mistyped)"

_HL7_COMMON: dict[str, Any] = {
    "hl7_version": "2.5",
    "framing": "MLLP: each message is 0x0B + segments (each ended by \\r) + 0x1C 0x0D",
    "date_format_hl7": "YYYYMMDD / YYYYMMDDHHMMSS (HL7 DTM, local time UTC+5)",
}


def _his(sid: str, name: str, script: str, upper: bool, iin_missing: float) -> Source:
    return Source(
        sid, name, "hospital", "mllp", "hl7v2", date_format="%Y%m%d",
        datetime_format="%Y%m%d%H%M%S", script=script, upper=upper, iin_missing=iin_missing,
        extra={**_HL7_COMMON, "message_types": ["ADT^A01", "ADT^A03", "ADT^A04", "ADT^A08",
                                                  "ADT^A40", "ORU^R01"]},
    )


def _lab(sid: str, name: str, script: str, iin_missing: float) -> Source:
    return Source(
        sid, name, "lab", "mllp", "hl7v2", date_format="%Y%m%d",
        datetime_format="%Y%m%d%H%M%S", script=script, upper=True, iin_missing=iin_missing,
        extra={**_HL7_COMMON, "message_types": ["ORU^R01"]},
    )


def _ehr(sid: str, name: str, bundle_type: str, iin_missing: float) -> Source:
    return Source(
        sid, name, "polyclinic", "fhir", "fhir-bundle", script="cyrillic",
        iin_missing=iin_missing,
        extra={"fhir_version": "4.0.1", "bundle_type": bundle_type,
               "layout": "NDJSON: one Bundle per line, UTF-8"},
    )


SOURCES: tuple[Source, ...] = (
    _his("his_astana", "Астана: МИС многопрофильных больниц", "cyrillic", False, 0.02),
    _his("his_almaty", "Almaty City Hospitals HIS", "latin:icao", True, 0.03),
    _his("his_shymkent", "Шымкент: КМИС стационаров юга", "cyrillic_ru", False, 0.05),
    _his("his_aktobe", "West Kazakhstan Hospital Information System", "latin:simple", True, 0.04),
    _his("his_karaganda", "Караганда: МИС стационаров центра, севера и востока", "cyrillic",
         True, 0.03),
    _his("his_republic", "National Research Centres HIS", "latin:gost", False, 0.01),
    _lab("lab_invivo", "Invivo laboratory LIS", "latin:gost", 0.25),
    _lab("lab_olymp", "Olymp laboratory LIS", "cyrillic", 0.15),
    _lab("lab_kdl", "KDL laboratory LIS", "latin:kz2021", 0.30),
    _ehr("ehr_damumed", "Damumed polyclinic EHR", "transaction", 0.01),
    _ehr("ehr_medelement", "MedElement polyclinic EHR", "batch", 0.03),
    _ehr("ehr_kmis", "KMIS polyclinic EHR", "transaction", 0.02),
    _ehr("ehr_tamos", "Tamos polyclinic EHR", "batch", 0.04),
    Source(
        "pharm_europharma", "Europharma pharmacy chain", "pharmacy", "file", "csv",
        encoding="cp1251", delimiter=";", date_format="%d.%m.%Y",
        datetime_format="%d.%m.%Y %H:%M", script="cyrillic_ru", decimal_comma=True,
        sex_codes=("м", "ж"), record_kind="dispense", id_column="ID_ОТПУСКА",
        patient_id_column="КАРТА_ПАЦИЕНТА", iin_missing=0.08,
        columns=_cols(
            ("ID_ОТПУСКА", "dispense_id", "dispensation id (kind dispense)"),
            ("БИН_АПТЕКИ", "pharmacy_bin", "BIN of the dispensing pharmacy"),
            ("КАРТА_ПАЦИЕНТА", "patient_id", _PAT_ID),
            ("ИИН", "iin", _IIN),
            ("ФИО", "fio", "surname, given name and patronymic in one field, space separated"),
            ("ДАТА_РОЖДЕНИЯ", "birth_date", "birth date"),
            ("ПОЛ", "sex", "sex"),
            ("ИСТОЧНИК_РЕЦЕПТА", "rx_source", "source id of the prescribing system"),
            ("НОМЕР_РЕЦЕПТА", "rx_id", "prescription id in the prescribing system"),
            ("ВРАЧ", "prescriber", "prescribing practitioner id (reg_practitioners)"),
            ("КОД_АТХ", "atc", "ATC code of the drug"),
            ("ПРЕПАРАТ", "drug_name", "drug name"),
            ("КОЛ_ВО", "quantity", "quantity dispensed, in units of the drug form"),
            ("ДНЕЙ", "days_supply", "days of therapy the quantity covers"),
            ("ДАТА_ОТПУСКА", "dispense_date", "dispensation date"),
            ("ЦЕНА", "unit_price", "price per unit, tenge"),
            ("СУММА", "amount", "amount, tenge"),
            ("СТАТУС", "status", "dispensed | corrected (a later correction of the same id)"),
        ),
    ),
    Source(
        "pharm_biosfera", "Biosfera pharmacy chain", "pharmacy", "file", "ndjson",
        script="latin:icao", record_kind="dispense", id_column="dispenseId",
        patient_id_column="clientId", iin_missing=0.12,
        columns=_cols(
            ("dispenseId", "dispense_id", "dispensation id (kind dispense)"),
            ("pharmacyBin", "pharmacy_bin", "BIN of the dispensing pharmacy"),
            ("clientId", "patient_id", _PAT_ID),
            ("iin", "iin", _IIN),
            ("lastName", "surname", "surname (Latin, ICAO transliteration)"),
            ("firstName", "given", "given name (Latin)"),
            ("middleName", "patronymic", "patronymic (Latin)"),
            ("birthDate", "birth_date", "birth date"),
            ("gender", "sex", "sex"),
            ("rxSystem", "rx_source", "source id of the prescribing system"),
            ("rxNumber", "rx_id", "prescription id in the prescribing system"),
            ("prescriberId", "prescriber", "prescribing practitioner id (reg_practitioners)"),
            ("atc", "atc", "ATC code"),
            ("drug", "drug_name", "drug name"),
            ("qty", "quantity", "quantity dispensed (number)"),
            ("days", "days_supply", "days of therapy (number)"),
            ("dispensedOn", "dispense_date", "dispensation date"),
            ("unitPrice", "unit_price", "price per unit, tenge (number)"),
            ("total", "amount", "amount, tenge (number)"),
            ("status", "status", "dispensed | corrected"),
        ),
    ),
    Source(
        "pharm_sadykhan", "Sadykhan pharmacy chain", "pharmacy", "file", "tsv",
        delimiter="\t", date_format="%Y%m%d", datetime_format="%Y%m%d%H%M%S",
        script="cyrillic", sex_codes=("1", "2"), record_kind="dispense", id_column="doc_no",
        patient_id_column="pat_code", iin_missing=0.05,
        columns=_cols(
            ("doc_no", "dispense_id", "dispensation id (kind dispense)"),
            ("apteka_bin", "pharmacy_bin", "BIN of the dispensing pharmacy"),
            ("pat_code", "patient_id", _PAT_ID),
            ("pat_iin", "iin", _IIN),
            ("fam", "surname", "surname"),
            ("im", "given", "given name"),
            ("ot", "patronymic", "patronymic"),
            ("dr", "birth_date", "birth date"),
            ("pol", "sex", "sex: 1 male, 2 female"),
            ("rx_sys", "rx_source", "source id of the prescribing system"),
            ("rx_no", "rx_id", "prescription id in the prescribing system"),
            ("vrach", "prescriber", "prescribing practitioner id (reg_practitioners)"),
            ("atx", "atc", "ATC code"),
            ("naimen", "drug_name", "drug name"),
            ("kol", "quantity", "quantity dispensed"),
            ("dni", "days_supply", "days of therapy"),
            ("data_otp", "dispense_date", "dispensation date"),
            ("cena", "unit_price", "price per unit, tenge"),
            ("summa", "amount", "amount, tenge"),
            ("status", "status", "dispensed | corrected"),
        ),
    ),
    Source(
        "pharm_zdravplus", "Zdravplus pharmacy chain", "pharmacy", "file", "csv",
        delimiter=",", script="latin:simple", sex_codes=("male", "female"),
        record_kind="dispense", id_column="receipt_id", patient_id_column="customer_id",
        iin_missing=0.10,
        columns=_cols(
            ("receipt_id", "dispense_id", "dispensation id (kind dispense)"),
            ("store_bin", "pharmacy_bin", "BIN of the dispensing pharmacy"),
            ("customer_id", "patient_id", _PAT_ID),
            ("customer_iin", "iin", _IIN),
            ("customer_name", "fio", "'Surname Given Patronymic' in Latin letters"),
            ("dob", "birth_date", "birth date"),
            ("gender", "sex", "sex"),
            ("rx_system", "rx_source", "source id of the prescribing system"),
            ("rx_number", "rx_id", "prescription id in the prescribing system"),
            ("prescriber_id", "prescriber", "prescribing practitioner id (reg_practitioners)"),
            ("atc_code", "atc", "ATC code"),
            ("product", "drug_name", "drug name"),
            ("quantity", "quantity", "quantity dispensed"),
            ("days_supply", "days_supply", "days of therapy"),
            ("sold_at", "dispense_date", "dispensation date"),
            ("unit_price", "unit_price", "price per unit, tenge"),
            ("line_total", "amount", "amount, tenge"),
            ("status", "status", "dispensed | corrected"),
        ),
    ),
    Source(
        "reg_population", "State database of individuals (ГБД ФЛ)", "registry", "file", "csv",
        delimiter=",", record_kind="person", id_column="record_no",
        patient_id_column="record_no", iin_missing=0.0,
        columns=_cols(
            ("record_no", "patient_id", _PAT_ID),
            ("iin", "iin", "IIN (always present and correct in this registry)"),
            ("surname", "surname", "current surname"),
            ("previous_surname", "previous_surname",
             "surname before a change (marriage), or empty"),
            ("surname_changed_on", "surname_date", "date of the surname change, or empty"),
            ("given_name", "given", "given name"),
            ("patronymic", "patronymic", "patronymic (may be empty)"),
            ("birth_date", "birth_date", "birth date"),
            ("sex", "sex", "sex"),
            ("region", "region", "region (oblast or republican city)"),
            ("city", "city", "settlement"),
            ("address", "address", "street address"),
            ("phone", "phone", "mobile phone +7 7xx, may be empty"),
            ("citizenship", "citizenship", "ISO country code"),
        ),
    ),
    Source(
        "reg_births", "Civil registry: births", "registry", "file", "csv",
        encoding="cp1251", delimiter=";", date_format="%d.%m.%Y", script="cyrillic_ru",
        sex_codes=("М", "Ж"), record_kind="birth", id_column="АКТ_№",
        patient_id_column="АКТ_№", iin_missing=0.0,
        columns=_cols(
            ("АКТ_№", "patient_id", "birth act number (the registry's id of the child) " + _PAT_ID),
            ("ИИН_РЕБЕНКА", "iin", "IIN of the child"),
            ("ФАМИЛИЯ", "surname", "surname of the child"),
            ("ИМЯ", "given", "given name"),
            ("ОТЧЕСТВО", "patronymic", "patronymic"),
            ("ДАТА_РОЖДЕНИЯ", "birth_date", "birth date"),
            ("ПОЛ", "sex", "sex"),
            ("РЕГИОН", "region", "region of registration"),
            ("ДАТА_РЕГИСТРАЦИИ", "event_date", "date of registration of the act"),
        ),
    ),
    Source(
        "reg_deaths", "Civil registry: deaths", "registry", "file", "csv",
        encoding="cp1251", delimiter=";", date_format="%d.%m.%Y", script="cyrillic_ru",
        sex_codes=("М", "Ж"), record_kind="death", id_column="АКТ_№", patient_id_column="АКТ_№",
        iin_missing=0.01,
        columns=_cols(
            ("АКТ_№", "patient_id", "death act number (the registry's id of the deceased) "
             + _PAT_ID),
            ("ИИН", "iin", "IIN of the deceased (rarely missing)"),
            ("ФАМИЛИЯ", "surname", "surname"),
            ("ИМЯ", "given", "given name"),
            ("ОТЧЕСТВО", "patronymic", "patronymic"),
            ("ДАТА_РОЖДЕНИЯ", "birth_date", "birth date"),
            ("ПОЛ", "sex", "sex"),
            ("ДАТА_СМЕРТИ", "death_date", "date of death"),
            ("ПРИЧИНА_МКБ10", "icd10", "underlying cause of death, ICD-10"),
        ),
    ),
    Source(
        "reg_migration", "Migration service: emigration", "registry", "file", "ndjson",
        script="latin:icao", record_kind="emigration", id_column="caseId",
        patient_id_column="caseId", iin_missing=0.0,
        columns=_cols(
            ("caseId", "patient_id", "emigration case id " + _PAT_ID),
            ("iin", "iin", "IIN"),
            ("lastName", "surname", "surname (Latin, passport transliteration)"),
            ("firstName", "given", "given name (Latin)"),
            ("birthDate", "birth_date", "birth date"),
            ("sex", "sex", "sex"),
            ("departureDate", "event_date", "date of departure for permanent residence abroad"),
            ("country", "country", "destination country, ISO code"),
        ),
    ),
    Source(
        "reg_attachment", "Register of attached population (РПН)", "registry", "file", "tsv",
        delimiter="\t", date_format="%Y%m%d", record_kind="attachment",
        id_column="attach_id", patient_id_column="rpn_person_id", iin_missing=0.0,
        columns=_cols(
            ("attach_id", "attach_id", "attachment record id (kind attachment)"),
            ("rpn_person_id", "patient_id", _PAT_ID),
            ("iin", "iin", "IIN"),
            ("fio", "fio", "surname given patronymic"),
            ("birth_date", "birth_date", "birth date"),
            ("sex", "sex", "sex"),
            ("mo_bin", "org_bin", "BIN of the polyclinic the person is attached to"),
            ("attached_from", "from_date", "attachment start"),
            ("attached_to", "to_date", "attachment end (empty: still attached)"),
            ("detach_reason", "reason", "empty | death | emigration"),
        ),
    ),
    Source(
        "reg_practitioners", "Register of health workers and licences", "registry", "file", "csv",
        delimiter=",", record_kind="practitioner", id_column="practitioner_id",
        iin_missing=0.0,
        columns=_cols(
            ("practitioner_id", "practitioner_id",
             "practitioner id, used by every source (kind practitioner)"),
            ("iin", "iin", "practitioner IIN"),
            ("surname", "surname", "surname"),
            ("given_name", "given", "given name"),
            ("patronymic", "patronymic", "patronymic"),
            ("speciality", "speciality", "speciality code (therapist, pediatrician, …)"),
            ("licence_no", "licence", "licence number (system https://usmis.kz/sid/licence); "
             "empty = never licensed"),
            ("licence_valid_from", "licence_from", "licence valid from"),
            ("licence_valid_to", "licence_to", "licence valid to (inclusive; empty = open)"),
            ("employer_bin", "org_bin", "BIN of the employing organization"),
            ("employed_from", "from_date", "employment start"),
            ("employed_to", "to_date", "employment end (inclusive; empty = open)"),
            ("status", "status", "active | deceased"),
            ("status_date", "status_date", "date of death when status = deceased"),
        ),
    ),
    Source(
        "reg_facilities", "Register of health organizations", "registry", "file", "ndjson",
        record_kind="organization", id_column="bin", iin_missing=0.0,
        columns=_cols(
            ("bin", "org_bin", "BIN (system https://usmis.kz/sid/bin)"),
            ("name", "name", "name"),
            ("type", "org_kind", "polyclinic | hospital | lab | pharmacy"),
            ("region", "region", "region"),
            ("city", "city", "city"),
            ("reportsVia", "via", "source id of the system this organization reports through"),
        ),
    ),
    Source(
        "reg_tariffs", "Tariff list of the health insurance fund", "registry", "file", "csv",
        delimiter=";", record_kind="tariff", id_column="code", iin_missing=0.0,
        columns=_cols(
            ("code", "code", "service code (system https://usmis.kz/cs/tariff)"),
            ("name", "name", "service name"),
            ("category", "category",
             "visit | screening | procedure | lab | inpatient_case | capitation"),
            ("price_kzt", "price", "price per unit in tenge (capitation: per person-month)"),
            ("standard_minutes", "minutes", "standard minutes of practitioner time per unit"),
            ("allowed_sex", "allowed_sex", "M, F or empty (any)"),
            ("min_age", "min_age", "minimum age in full years at the service date (inclusive)"),
            ("max_age", "max_age", "maximum age in full years (inclusive)"),
            ("max_units_per_day", "max_units", "maximum units per person per day"),
            ("expensive_case_group", "expensive", "1 when an expensive case group, else 0"),
        ),
    ),
    Source(
        "reg_drug_indications", "Formulary: ICD-10 indications of drugs", "registry", "file",
        "csv", delimiter=",", record_kind="indication", id_column="", iin_missing=0.0,
        columns=_cols(
            ("atc", "atc", "ATC code"),
            ("icd10_prefix", "icd10", "an indicating ICD-10 code prefix (E11 matches E11.9)"),
        ),
    ),
    Source(
        "reg_drug_doses", "Formulary: drugs and maximum daily doses", "registry", "file", "csv",
        encoding="cp1251", delimiter=";", decimal_comma=True, record_kind="drug",
        id_column="АТХ", iin_missing=0.0,
        columns=_cols(
            ("АТХ", "atc", "ATC code"),
            ("НАИМЕНОВАНИЕ", "name", "drug name"),
            ("ФОРМА", "form", "unit form"),
            ("ДОЗИРОВКА_МГ", "strength", "mg of active substance per unit"),
            ("МАКС_СУТ_ДОЗА_МГ", "max_daily", "maximum daily dose, mg"),
            ("ЦЕНА_ЕД", "unit_price", "reimbursed price per unit, tenge"),
        ),
    ),
    Source(
        "fund_claims_outpatient", "Social health insurance fund: outpatient claims", "insurer",
        "file", "csv", encoding="cp1251", delimiter=";", date_format="%d.%m.%Y",
        decimal_comma=True, record_kind="claim", id_column="ID_СЧЕТА",
        patient_id_column="ID_ЗАСТРАХОВАННОГО", iin_missing=0.005,
        columns=_cols(
            ("ID_СЧЕТА", "claim_id", "claim id, unique over all fund_claims_* (kind claim)"),
            ("БИН_ПОСТАВЩИКА", "provider_bin", "BIN of the provider billing the service"),
            ("ID_ВРАЧА", "practitioner_id", "practitioner id (reg_practitioners)"),
            ("ID_ЗАСТРАХОВАННОГО", "patient_id", "the fund's own id of the insured person "
             + _PAT_ID),
            ("ИИН", "iin", _IIN),
            ("КОД_УСЛУГИ", "service_code", "tariff service code"),
            ("ДАТА_УСЛУГИ", "service_date", "date of service"),
            ("КОЛ_ВО", "units", "units"),
            ("СУММА", "amount", "amount claimed, tenge (= price × units)"),
            ("СИСТЕМА_ИСТОЧНИК", "src_system", "source id of the system holding the service"),
            ("ID_ЗАПИСИ_ИСТОЧНИКА", "src_record_id",
             "the service's record id in that system: FHIR Encounter identifier, "
             "HL7 visit number (PV1-19) or lab filler order number (OBR-3)"),
            ("ДАТА_ПОДАЧИ", "submitted_date", "date the claim was submitted"),
        ),
    ),
    Source(
        "fund_claims_inpatient", "Social health insurance fund: inpatient claims", "insurer",
        "file", "tsv", delimiter="\t", record_kind="claim", id_column="claim_id",
        patient_id_column="insured_id", iin_missing=0.005,
        columns=_cols(
            ("claim_id", "claim_id", "claim id, unique over all fund_claims_* (kind claim)"),
            ("provider_bin", "provider_bin", "BIN of the hospital"),
            ("practitioner_id", "practitioner_id", "attending practitioner id"),
            ("insured_id", "patient_id", "the fund's own id of the insured person " + _PAT_ID),
            ("iin", "iin", _IIN),
            ("case_group", "service_code", "case group code (tariff code, inpatient_case)"),
            ("icd10", "icd10", "main diagnosis ICD-10"),
            ("admission_date", "service_date", "admission date (the claim's service date)"),
            ("discharge_date", "discharge_date", "discharge date"),
            ("units", "units", "units (1)"),
            ("amount", "amount", "amount claimed, tenge"),
            ("src_system", "src_system", "source id of the hospital system"),
            ("src_record_id", "src_record_id", "visit number (PV1-19) of the stay"),
            ("submitted", "submitted_date", "date the claim was submitted"),
        ),
    ),
    Source(
        "fund_claims_drugs", "Social health insurance fund: outpatient drug claims", "insurer",
        "file", "ndjson", record_kind="claim", id_column="claimId",
        patient_id_column="insuredId", iin_missing=0.005,
        columns=_cols(
            ("claimId", "claim_id", "claim id, unique over all fund_claims_* (kind claim)"),
            ("pharmacyBin", "provider_bin", "BIN of the pharmacy"),
            ("prescriberId", "practitioner_id", "prescribing practitioner id"),
            ("insuredId", "patient_id", "the fund's own id of the insured person " + _PAT_ID),
            ("iin", "iin", _IIN),
            ("atc", "service_code", "ATC code of the drug"),
            ("dispensedOn", "service_date", "dispensation date"),
            ("quantity", "units", "quantity (units of the drug form)"),
            ("daysSupply", "days_supply", "days of therapy"),
            ("amount", "amount", "amount claimed, tenge (= unit price × quantity)"),
            ("srcSystem", "src_system", "pharmacy source id"),
            ("srcRecordId", "src_record_id", "dispensation id in that pharmacy system"),
            ("submittedOn", "submitted_date", "date the claim was submitted"),
        ),
    ),
    Source(
        "fund_capitation", "Social health insurance fund: capitation payments", "insurer",
        "file", "csv", delimiter=",", date_format="%Y-%m-%d", record_kind="payment",
        id_column="payment_id", iin_missing=0.0,
        columns=_cols(
            ("payment_id", "payment_id", "payment id"),
            ("provider_bin", "provider_bin", "BIN of the polyclinic"),
            ("month", "month", "month paid for, YYYY-MM"),
            ("attached_count", "count", "persons attached on the 1st day of the month"),
            ("rate_kzt", "price", "capitation rate per person-month, tenge (tariff CAP01)"),
            ("amount", "amount", "amount paid, tenge"),
        ),
    ),
)

SOURCE_BY_ID: dict[str, Source] = {s.id: s for s in SOURCES}
FUND_IDS = ("fund_claims_outpatient", "fund_claims_inpatient", "fund_claims_drugs")
