"""DEVELOPMENT / EVALUATION PATH: an extract built straight from a synthetic nation's feeds.

This is *not* how production works.  It skips ingestion and the patient index: it reads
the registry and insurance-fund files, the EHR FHIR bundles and the hospital HL7 messages
of a folder made by ``usmis synth`` directly, and uses the ground truth's person ids
(``ground_truth/source_records.csv``) in place of the patient index's person keys.  It
exists so the rule catalogue can be built and tuned while ingestion and the index are
being built, and so ``usmis oversight evaluate`` measures the rules alone (linkage errors
excluded).  Everything else is as in production: person keys are pseudonymised with a
keyed HMAC, no direct identifier is written, and rows keep their source system and record.

Rows that do not parse (the nation's planted malformed rows) are skipped; a record sent
again (late files, re-sends) keeps its last readable version.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from usmis.config import Settings
from usmis.oversight import model
from usmis.oversight.extract.writer import Manifest, conform, write_manifest, write_part

BUILDER = "nation-dev"
TARIFF_KIND = {"visit": "service", "screening": "service", "procedure": "service",
               "lab": "lab", "inpatient_case": "case_group", "capitation": "capitation"}

Row = dict[str, Any]


class Nation:
    """The parts of a nation folder the builder reads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        raw = json.loads((root / "sources.json").read_text(encoding="utf-8"))
        sources = raw if isinstance(raw, list) else raw.get("sources", [])
        self.sources: dict[str, dict[str, Any]] = {s["id"]: s for s in sources}
        meta = json.loads((root / "nation.json").read_text(encoding="utf-8"))
        self.period_end = date.fromisoformat(meta["period_end"])
        self.persons: dict[tuple[str, str], str] = {}
        with (root / "ground_truth" / "source_records.csv").open(encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                self.persons[(rec["source_id"], rec["local_id"])] = rec["person_id"]

    def person(self, source_id: str, local_id: str | None) -> str | None:
        """The ground truth's person id standing in for the linked person key."""
        if not local_id:
            return None
        return self.persons.get((source_id, local_id))

    def files(self, source_id: str) -> list[Path]:
        src = self.sources.get(source_id)
        # a file listed twice is read once
        return [self.root / f for f in dict.fromkeys((src or {}).get("files", []))]

    def rows(self, source_id: str) -> Iterator[Row]:
        """Rows of a file source as {column: text}; undecodable or ragged rows skipped."""
        src = self.sources[source_id]
        enc = src.get("encoding") or "utf-8"
        fmt = src.get("format")
        for path in self.files(source_id):
            if not path.exists():
                continue
            header: list[str] | None = None
            for raw in path.read_bytes().splitlines():
                try:
                    line = raw.decode(enc)
                except UnicodeDecodeError:
                    continue
                if not line.strip():
                    continue
                if fmt == "ndjson":
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(obj, dict):
                        yield obj
                    continue
                delim = src.get("delimiter") or ","
                fields = next(csv.reader(io.StringIO(line), delimiter=delim))
                if header is None:
                    header = fields
                    continue
                if len(fields) != len(header):
                    continue
                yield dict(zip(header, fields, strict=True))

    def day(self, source_id: str, value: Any) -> date | None:
        if not isinstance(value, str) or not value.strip():
            return None
        fmt = self.sources[source_id].get("date_format") or "%Y-%m-%d"
        text = value.strip()
        for candidate in (text, text[:10], text[:8]):
            try:
                return datetime.strptime(candidate, fmt).date()
            except ValueError:
                continue
        return None

    def num(self, source_id: str, value: Any) -> float | None:
        if isinstance(value, int | float):
            return float(value)
        if not isinstance(value, str) or not value.strip():
            return None
        if self.sources[source_id].get("decimal_separator") == ",":
            value = value.replace(" ", "").replace(",", ".")
        try:
            return float(value)
        except ValueError:
            return None


def _iso_day(value: Any) -> date | None:
    if isinstance(value, str) and len(value) >= 10:
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _hl7_day(value: str) -> date | None:
    try:
        return datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None


# (column of: claim id, provider BIN, practitioner, insured id, code, date, units, amount,
#  billing system, billing system's record id)
_CLAIM_COLUMNS = {
    "fund_claims_outpatient": ("ID_СЧЕТА", "БИН_ПОСТАВЩИКА", "ID_ВРАЧА", "ID_ЗАСТРАХОВАННОГО",
                               "КОД_УСЛУГИ", "ДАТА_УСЛУГИ", "КОЛ_ВО", "СУММА",
                               "СИСТЕМА_ИСТОЧНИК", "ID_ЗАПИСИ_ИСТОЧНИКА"),
    "fund_claims_inpatient": ("claim_id", "provider_bin", "practitioner_id", "insured_id",
                              "case_group", "admission_date", "units", "amount", "src_system",
                              "src_record_id"),
    "fund_claims_drugs": ("claimId", "pharmacyBin", "prescriberId", "insuredId", "atc",
                          "dispensedOn", "quantity", "amount", "srcSystem", "srcRecordId"),
}


def build_tables(nation: Nation, key: bytes,
                 pairs: dict[str, str] | None = None) -> dict[str, list[Row]]:
    """The extract's tables; ``pairs`` (if given) collects pseudonym → person id."""
    t: dict[str, list[Row]] = {}
    seen: dict[str, str] = {} if pairs is None else pairs

    def alias(person_id: str | None) -> str | None:
        if not person_id:
            return None
        found = seen.get(person_id)
        if found is None:
            found = seen[person_id] = model.pseudonym(key, person_id)
        return found

    def prov(source: str, record: str) -> Row:
        return {"source_system": source, "source_record_id": record}

    # organizations, practitioners, licences, employments --------------------------------
    t["organizations"] = [
        {**prov("reg_facilities", r["bin"]), "org_id": r["bin"], "org_kind": r.get("type"),
         "region": r.get("region"), "org_name": r.get("name")}
        for r in nation.rows("reg_facilities") if r.get("bin")
    ]
    t["practitioners"], t["licences"], t["employments"] = [], [], []
    s = "reg_practitioners"
    for r in nation.rows(s):
        pid = r.get("practitioner_id")
        if not pid:
            continue
        status = (r.get("status") or "").lower()
        died = nation.day(s, r.get("status_date")) if status in (
            "deceased", "dead", "died") else None
        t["practitioners"].append({**prov(s, pid), "practitioner_id": pid,
                                   "speciality": r.get("speciality"), "death_date": died})
        if r.get("licence_no"):
            t["licences"].append({**prov(s, f"{pid}#licence"), "licence_id": r["licence_no"],
                                  "practitioner_id": pid,
                                  "valid_from": nation.day(s, r.get("licence_valid_from"))
                                  or date(1900, 1, 1),
                                  "valid_to": nation.day(s, r.get("licence_valid_to"))})
        if r.get("employer_bin"):
            t["employments"].append({**prov(s, f"{pid}#employment"),
                                     "employment_id": f"{pid}@{r['employer_bin']}",
                                     "practitioner_id": pid, "org_id": r["employer_bin"],
                                     "start_date": nation.day(s, r.get("employed_from"))
                                     or date(1900, 1, 1),
                                     "end_date": nation.day(s, r.get("employed_to"))})
    # tariffs, drugs, indications ---------------------------------------------------------
    t["tariffs"] = []
    s = "reg_tariffs"
    for r in nation.rows(s):
        kind = TARIFF_KIND.get(r.get("category", ""), "service")
        code = r.get("code", "")
        t["tariffs"].append({
            **prov(s, code), "code": code, "kind": kind, "price": nation.num(s, r["price_kzt"]),
            "std_minutes": nation.num(s, r.get("standard_minutes")),
            "sex": r.get("allowed_sex") or None,
            "min_age": int(nation.num(s, r.get("min_age")) or 0) if r.get("min_age") else None,
            "max_age": int(nation.num(s, r.get("max_age")) or 0) if r.get("max_age") else None,
            "max_units_per_day": nation.num(s, r.get("max_units_per_day")),
            "expensive": r.get("expensive_case_group") == "1" if kind == "case_group" else None,
            "case_family": code.rstrip("X") if kind == "case_group" else None,
        })
    s = "reg_drug_doses"
    for r in nation.rows(s):
        mg, max_mg = nation.num(s, r.get("ДОЗИРОВКА_МГ")), nation.num(s, r.get("МАКС_СУТ_ДОЗА_МГ"))
        t["tariffs"].append({
            **prov(s, r["АТХ"]), "code": r["АТХ"], "kind": "drug",
            "price": nation.num(s, r.get("ЦЕНА_ЕД")),
            "max_daily_dose": (max_mg / mg) if mg and max_mg else None,
        })
    t["indications"] = [
        {**prov("reg_drug_indications", f"{r['atc']}>{r['icd10_prefix']}"), "atc": r["atc"],
         "icd10_prefix": r["icd10_prefix"]}
        for r in nation.rows("reg_drug_indications") if r.get("atc")
    ]
    # people and life events ----------------------------------------------------------------
    persons: dict[str, Row] = {}
    s = "reg_population"
    for r in nation.rows(s):
        born = nation.day(s, r.get("birth_date"))
        pid = nation.person(s, r.get("record_no"))
        if pid is None:
            continue
        persons[pid] = {**prov(s, r["record_no"]), "person_key": alias(pid),
                        "sex": r.get("sex") or None,
                        "birth_year": born.year if born else None,
                        "birth_month": born.month if born else None, "region": r.get("region")}
    s = "reg_births"
    sex_codes = nation.sources.get(s, {}).get("sex_codes", {"male": "M", "female": "F"})
    for r in nation.rows(s):
        pid = nation.person(s, r.get("АКТ_№"))
        if pid is None or pid in persons:
            continue
        born = nation.day(s, r.get("ДАТА_РОЖДЕНИЯ"))
        sex = {sex_codes.get("male"): "M", sex_codes.get("female"): "F"}.get(r.get("ПОЛ"))
        persons[pid] = {**prov(s, r["АКТ_№"]), "person_key": alias(pid), "sex": sex,
                        "birth_year": born.year if born else None,
                        "birth_month": born.month if born else None, "region": r.get("РЕГИОН")}
    t["persons"] = list(persons.values())
    events: dict[tuple[str, str], Row] = {}
    s = "reg_deaths"
    for r in nation.rows(s):
        pid, when = nation.person(s, r.get("АКТ_№")), nation.day(s, r.get("ДАТА_СМЕРТИ"))
        if pid and when:
            events[(s, r["АКТ_№"])] = {**prov(s, r["АКТ_№"]), "event_id": r["АКТ_№"],
                                       "person_key": alias(pid), "event": "death",
                                       "event_date": when}
    s = "reg_migration"
    for r in nation.rows(s):
        pid, when = nation.person(s, r.get("caseId")), nation.day(s, r.get("departureDate"))
        if pid and when:
            events[(s, r["caseId"])] = {**prov(s, r["caseId"]), "event_id": r["caseId"],
                                        "person_key": alias(pid), "event": "emigration",
                                        "event_date": when}
    t["life_events"] = list(events.values())
    attachments: dict[str, Row] = {}
    s = "reg_attachment"
    for r in nation.rows(s):
        pid = nation.person(s, r.get("rpn_person_id"))
        start = nation.day(s, r.get("attached_from"))
        if not r.get("attach_id") or start is None:
            continue
        attachments[r["attach_id"]] = {
            **prov(s, r["attach_id"]), "attachment_id": f"{s}|{r['attach_id']}",
            "person_key": alias(pid), "org_id": r.get("mo_bin"), "start_date": start,
            "end_date": nation.day(s, r.get("attached_to"))}
    t["attachments"] = list(attachments.values())
    # claims, stays, dispensations -----------------------------------------------------------
    claims: dict[str, Row] = {}
    stays: dict[str, Row] = {}
    dispensations: dict[str, Row] = {}
    diagnoses: list[Row] = []
    for s, cols in _CLAIM_COLUMNS.items():
        if s not in nation.sources:
            continue
        cid_c, bin_c, pr_c, ins_c, code_c, date_c, qty_c, amt_c, sys_c, rec_c = cols
        for r in nation.rows(s):
            cid = r.get(cid_c)
            when = nation.day(s, r.get(date_c)) if isinstance(r.get(date_c), str) else None
            amount = nation.num(s, r.get(amt_c))
            if not cid or when is None or amount is None:
                continue
            qty = nation.num(s, r.get(qty_c)) or 1.0
            code = str(r.get(code_c) or "")
            billing, record = str(r.get(sys_c) or ""), str(r.get(rec_c) or "")
            kind = {"fund_claims_inpatient": "stay", "fund_claims_drugs": "drug"}.get(
                s, "lab" if code.startswith("B") else "service")
            record_id = f"{billing}|{record}" if record else None
            person = alias(nation.person(s, r.get(ins_c)))
            claims[cid] = {
                **prov(s, cid), "claim_id": f"{s}|{cid}", "person_key": person,
                "provider_id": r.get(bin_c) or None, "practitioner_id": r.get(pr_c) or None,
                "service_date": when, "code": code, "kind": kind, "quantity": qty,
                "amount": amount,
                "record_type": {"stay": "stay", "drug": "dispensation"}.get(kind, "encounter"),
                "record_id": record_id, "billing_system": billing or None,
            }
            if kind == "stay" and record_id:
                out = nation.day(s, r.get("discharge_date")) or when
                stays[record_id] = {**prov(billing, record), "stay_id": record_id,
                                    "person_key": person, "org_id": r.get(bin_c),
                                    "admit_date": when, "discharge_date": out,
                                    "case_group": code}
                if r.get("icd10"):
                    diagnoses.append({**prov(s, f"{cid}#dx"), "diagnosis_id": f"{s}|{cid}#dx",
                                      "person_key": person, "org_id": r.get(bin_c),
                                      "diagnosis_date": when, "icd10": r["icd10"]})
            if kind == "drug" and record_id:
                days = nation.num(s, r.get("daysSupply"))
                dispensations[record_id] = {
                    **prov(billing, record), "dispensation_id": record_id,
                    "person_key": person, "org_id": r.get(bin_c),
                    "practitioner_id": r.get(pr_c) or None, "dispense_date": when,
                    "atc": code, "quantity": qty, "days_supply": int(days) if days else None}
    t["claims"] = list(claims.values())
    t["payments"] = _capitation(nation)
    t["stays"] = list(stays.values())
    t["dispensations"] = list(dispensations.values())
    # diagnoses recorded by polyclinics (FHIR) and hospitals (HL7 DG1) ----------------------
    diagnoses += _fhir_conditions(nation, alias)
    diagnoses += _hl7_diagnoses(nation, alias)
    t["diagnoses"] = diagnoses
    return t


def _capitation(nation: Nation) -> list[Row]:
    """The fund's monthly capitation payments (one row per polyclinic and month).  The
    nation has no feed of claim payments, so kind 'claim' stays empty on this path."""
    s = "fund_capitation"
    if s not in nation.sources:
        return []
    out: dict[str, Row] = {}
    for r in nation.rows(s):
        pid, month = r.get("payment_id"), nation.day(s, f"{r.get('month') or ''}-01")
        if not pid or month is None:
            continue
        count = nation.num(s, r.get("attached_count"))
        out[pid] = {"source_system": s, "source_record_id": pid, "payment_id": f"{s}|{pid}",
                    "kind": "capitation", "claim_id": None,
                    "provider_id": r.get("provider_bin") or None, "period_month": month,
                    "paid_date": month, "amount": nation.num(s, r.get("amount")),
                    "attached_count": int(count) if count is not None else None,
                    "rate": nation.num(s, r.get("rate_kzt"))}
    return list(out.values())


def _fhir_conditions(nation: Nation, alias: Any) -> list[Row]:
    out: dict[str, Row] = {}
    for sid, src in nation.sources.items():
        if src.get("format") != "fhir-bundle":
            continue
        patient_system = f"https://usmis.kz/sid/source/{sid}/patient"
        for bundle in _ndjson(nation, sid):
            entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
            # transaction bundles refer to their Patient by its entry's fullUrl (urn:uuid)
            local_of: dict[str, str] = {}
            for entry in entries:
                res = entry.get("resource") or {}
                if res.get("resourceType") == "Patient" and entry.get("fullUrl"):
                    for ident in res.get("identifier") or []:
                        if isinstance(ident, dict) and ident.get("system") == patient_system:
                            local_of[entry["fullUrl"]] = str(ident.get("value"))
            for entry in entries:
                res = entry.get("resource") or {}
                if res.get("resourceType") != "Condition":
                    continue
                ref = res.get("subject") or {}
                subject = (ref.get("identifier") or {}).get("value") or local_of.get(
                    ref.get("reference", ""))
                codes = [c.get("code") for c in (res.get("code") or {}).get("coding") or []
                         if isinstance(c, dict)]
                ident = next((i.get("value") for i in res.get("identifier") or []
                              if isinstance(i, dict)), None)
                when = _iso_day(res.get("onsetDateTime")) or _iso_day(res.get("recordedDate"))
                if not codes or not codes[0] or not ident:
                    continue
                out[f"{sid}|{ident}"] = {
                    "source_system": sid, "source_record_id": ident,
                    "diagnosis_id": f"{sid}|{ident}",
                    "person_key": alias(nation.person(sid, subject)), "org_id": None,
                    "diagnosis_date": when, "icd10": codes[0]}
    return list(out.values())


def _ndjson(nation: Nation, sid: str) -> Iterator[dict[str, Any]]:
    for path in nation.files(sid):
        if not path.exists():
            continue
        for raw in path.read_bytes().splitlines():
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj


def _hl7_diagnoses(nation: Nation, alias: Any) -> list[Row]:
    out: list[Row] = []
    for sid, src in nation.sources.items():
        if src.get("format") != "hl7v2":
            continue
        for path in nation.files(sid):
            if not path.exists():
                continue
            text = path.read_bytes().decode("utf-8", errors="replace")
            local = None
            n = 0
            for seg in text.replace("\n", "\r").split("\r"):
                seg = seg.strip("\x0b\x1c ")
                if seg.startswith("MSH"):
                    local = None
                elif seg.startswith("PID|"):
                    f = seg.split("|")
                    local = f[3].split("~")[0].split("^")[0] if len(f) > 3 else None
                elif seg.startswith("DG1|") and local:
                    f = seg.split("|")
                    code = f[3].split("^")[0] if len(f) > 3 else ""
                    when = _hl7_day(f[5]) if len(f) > 5 else None
                    if code:
                        n += 1
                        out.append({"source_system": sid, "source_record_id": f"{path.name}#{n}",
                                    "diagnosis_id": f"{sid}|{path.name}#{n}",
                                    "person_key": alias(nation.person(sid, local)),
                                    "org_id": None, "diagnosis_date": when, "icd10": code})
    return out


def build_nation_extract(nation_dir: Path, out: Path, *, settings: Settings | None = None,
                         key: bytes | None = None, save_pseudonyms: bool = False) -> Manifest:
    """Write the dev/evaluation extract of ``nation_dir`` into ``out`` (replacing it).

    ``save_pseudonyms`` stores pseudonym → ground-truth person id in the USMIS database so
    the (audited) re-identification works on a dev extract too.
    """
    import shutil

    from usmis.oversight.service import key_path

    settings = settings or Settings()
    if key is None:
        key = model.load_or_create_key(key_path(settings))
    nation = Nation(nation_dir)
    persons: dict[str, str] = {}
    tables = build_tables(nation, key, persons)
    if save_pseudonyms:
        from usmis.kit.db import make_engine, transaction
        from usmis.oversight import repository as repo

        engine = make_engine(settings.resolved_database_url)
        try:
            with transaction(engine) as conn:
                repo.save_pseudonyms(conn, sorted((a, p) for p, a in persons.items()))
        finally:
            engine.dispose()
    if out.exists():
        shutil.rmtree(out)
    counts = {}
    for name, rows in tables.items():
        write_part(out, name, conform(name, rows), 1)
        counts[name] = len(rows)
    manifest = Manifest(builder=BUILDER, as_of=nation.period_end.isoformat(), parts=1,
                        rows=counts)
    write_manifest(out, manifest)
    return manifest
