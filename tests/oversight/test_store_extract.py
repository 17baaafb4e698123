"""The production extract: FHIR store + patient index → pseudonymised Parquet, incremental."""

from __future__ import annotations

from datetime import date
from typing import Any

import pyarrow.parquet as pq
from sqlalchemy import select

from usmis.config import Settings
from usmis.fhir.service import FhirService
from usmis.kit.crypto import keyring_for
from usmis.kit.db import make_engine, transaction
from usmis.mpi.service import link_source_patient
from usmis.oversight.catalogue import load_catalogue
from usmis.oversight.engine import open_extract, run_rule
from usmis.oversight.extract.store import build_store_extract
from usmis.oversight.extract.writer import read_manifest, table_parts
from usmis.oversight.service import extract_dir
from usmis.oversight.tables import oversight_pseudonym

SRC = "https://usmis.kz/sid/source"
IIN = "https://usmis.kz/sid/iin"


def patient(source: str, local: str, *, deceased: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": f"{SRC}/{source}/patient", "value": local},
                       {"system": IIN, "value": "850101300128"}],
        "name": [{"family": "Тестова", "given": ["Айгуль"]}],
        "gender": "female", "birthDate": "1985-01-01",
        "address": [{"city": "Алматы", "state": "г. Алматы"}],
    }
    if deceased:
        res["deceasedDateTime"] = deceased
    return res


def claim(source: str, cid: str, patient_id: str, org_id: str, day: str,
          code: str = "A01.001", amount: float = 3500) -> dict[str, Any]:
    return {
        "resourceType": "Claim", "status": "active",
        "identifier": [{"system": f"{SRC}/{source}/claim", "value": cid}],
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                             "code": "professional"}]},
        "use": "claim", "patient": {"reference": f"Patient/{patient_id}"},
        "created": day, "provider": {"reference": f"Organization/{org_id}"},
        "priority": {"coding": [{"code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True,
                       "coverage": {"display": "compulsory social health insurance"}}],
        "item": [{"sequence": 1,
                  "productOrService": {"coding": [{"system": "https://usmis.kz/cs/tariff",
                                                   "code": code}]},
                  "servicedDate": day, "quantity": {"value": 1},
                  "net": {"value": amount, "currency": "KZT"}}],
    }


def test_store_extract_is_pseudonymised_linked_and_incremental(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)
    keys = keyring_for(settings.resolved_key_file)
    with transaction(engine) as conn:
        svc = FhirService(conn, keys)
        org = svc.create({"resourceType": "Organization", "name": "Polyclinic 1",
                          "identifier": [{"system": "https://usmis.kz/sid/bin",
                                          "value": "123456789012"}],
                          "address": [{"state": "г. Алматы"}]}).resource["id"]
        a = svc.create(patient("ehr_a", "a-1", deceased="2025-03-10")).resource["id"]
        b = svc.create(patient("ehr_b", "b-7")).resource["id"]
        person_a = link_source_patient(conn, settings, a)
        person_b = link_source_patient(conn, settings, b)
        svc.create(claim("ehr_a", "c1", a, org, "2025-04-01"))
        svc.create(claim("ehr_b", "c2", b, org, "2025-04-01"))
    assert person_a == person_b  # same valid IIN, same person: one linked person

    manifest = build_store_extract(settings, as_of=date(2025, 12, 31))
    root = extract_dir(settings)
    assert manifest.builder == "store"
    assert manifest.rows["claims"] == 2
    claims = pq.read_table(table_parts(root, "claims")[0]).to_pylist()
    keys_in_extract = {c["person_key"] for c in claims}
    assert len(keys_in_extract) == 1  # linked across the two systems
    (pseudo,) = keys_in_extract
    assert pseudo != person_a  # never the patient index's own key
    assert {c["provider_id"] for c in claims} == {"123456789012"}
    persons = pq.read_table(table_parts(root, "persons")[0])
    assert "iin" not in persons.column_names
    assert set(persons.column("birth_year").to_pylist()) == {1985}
    with transaction(engine) as conn:
        mapped = conn.execute(select(oversight_pseudonym.c.person_key)
                              .where(oversight_pseudonym.c.pseudonym == pseudo)).scalar_one()
    assert mapped == person_a

    rules = {r.id: r for r in load_catalogue(only=["after_death", "duplicate_billing"])}
    with open_extract(root, threads=1, memory_limit="500MB") as con:
        dead = run_rule(con, rules["after_death"], date(2025, 12, 31)).findings.to_pylist()
        dup = run_rule(con, rules["duplicate_billing"], date(2025, 12, 31)).findings.to_pylist()
    assert [f["item_ids"] for f in dead] == [["ehr_a|c1", "ehr_b|c2"]]
    assert [(f["item_ids"], f["detail"]) for f in dup] == [(["ehr_b|c2"], "across_systems")]

    # Incremental: nothing changed → an empty increment; one new claim → only it is read.
    again = build_store_extract(settings, as_of=date(2025, 12, 31))
    assert again.rows["claims"] == 2
    with transaction(engine) as conn:
        FhirService(conn, keys).create(claim("ehr_a", "c3", a, org, "2025-05-01"))
    third = build_store_extract(settings, as_of=date(2025, 12, 31))
    assert third.rows["claims"] == 3
    assert len(table_parts(root, "claims")) == 2
    assert read_manifest(root) is not None
    with open_extract(root, threads=1, memory_limit="500MB") as con:
        dead = run_rule(con, rules["after_death"], date(2025, 12, 31)).findings.to_pylist()
    assert dead[0]["item_ids"] == ["ehr_a|c1", "ehr_a|c3", "ehr_b|c2"]
    engine.dispose()


def encounter(source: str, local: str, cls: str, patient_id: str, org_id: str, start: str,
              end: str) -> dict[str, Any]:
    """A finished Encounter (AMB visit or IMP stay) of a source, by its own identifier."""
    return {
        "resourceType": "Encounter", "status": "finished",
        "identifier": [{"system": f"{SRC}/{source}/encounter", "value": local}],
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
        "subject": {"reference": f"Patient/{patient_id}"},
        "serviceProvider": {"reference": f"Organization/{org_id}"},
        "period": {"start": start, "end": end},
    }


def _org(svc: FhirService, bin_: str, kind: str) -> str:
    return str(svc.create({
        "resourceType": "Organization", "name": f"{kind} {bin_}",
        "identifier": [{"system": "https://usmis.kz/sid/bin", "value": bin_}],
        "type": [{"coding": [{"system": "https://usmis.kz/cs/org-kind", "code": kind}]}],
        "address": [{"state": "г. Алматы"}]}).resource["id"])


def _bills(res: dict[str, Any], source: str, record: str) -> dict[str, Any]:
    """The fund's claim names the record it pays for (supportingInfo source-record)."""
    res["supportingInfo"] = [{"sequence": 1, "category": {"coding": [{"code": "info"}]},
                              "valueReference": {"identifier": {
                                  "system": f"https://usmis.kz/source/{source}",
                                  "value": record}}}]
    return res


def test_lab_claim_takes_the_person_of_the_lab_order_it_bills(settings: Settings) -> None:
    """A fund claim identifies the insured by IIN alone; when that IIN is unusable the
    fund's Patient is a person of its own.  A lab claim names the lab's order (the
    DiagnosticReport), not one of its results (Observations `order-1`, `order-2`), so the
    order is what gives it the linked person — and only then is the polyclinic billing the
    same test on the same day visible as a duplicate across systems."""
    engine = make_engine(settings.resolved_database_url)
    keys = keyring_for(settings.resolved_key_file)
    with transaction(engine) as conn:
        svc = FhirService(conn, keys)
        poly = _org(svc, "111111111111", "polyclinic")
        lab = _org(svc, "222222222222", "lab")
        lab_pt = svc.create(patient("lab_x", "L-1")).resource["id"]
        ehr_pt = svc.create(patient("ehr_a", "a-1")).resource["id"]
        fund_pt = svc.create({"resourceType": "Patient", "identifier": [
            {"system": f"{SRC}/fund/patient", "value": "F-1"}]}).resource["id"]
        persons = {link_source_patient(conn, settings, p) for p in (lab_pt, ehr_pt, fund_pt)}
        assert len(persons) == 2  # the fund's record is a person of its own
        svc.create(encounter("ehr_a", "E-1", "AMB", ehr_pt, poly,
                             "2025-04-01T09:00:00+05:00", "2025-04-01T09:20:00+05:00"))
        results = []
        for n, loinc in enumerate(("718-7", "6690-2"), 1):
            obs = svc.create({
                "resourceType": "Observation", "status": "final",
                "identifier": [{"system": f"{SRC}/lab_x/observation", "value": f"ORD-1-{n}"}],
                "category": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
                "subject": {"reference": f"Patient/{lab_pt}"},
                "effectiveDateTime": "2025-04-01T10:00:00+05:00",
                "valueQuantity": {"value": 5.0}}).resource["id"]
            results.append({"reference": f"Observation/{obs}"})
        svc.create({
            "resourceType": "DiagnosticReport", "status": "final",
            "identifier": [{"system": f"{SRC}/lab_x/report", "value": "ORD-1"}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
            "subject": {"reference": f"Patient/{lab_pt}"}, "result": results})
        svc.create(_bills(claim("fund", "C-lab", fund_pt, lab, "2025-04-01", "B03.001", 2100),
                          "lab_x", "ORD-1"))
        svc.create(_bills(claim("fund", "C-poly", fund_pt, poly, "2025-04-01", "B03.001", 2100),
                          "ehr_a", "E-1"))

    build_store_extract(settings, as_of=date(2025, 12, 31))
    root = extract_dir(settings)
    claims = pq.read_table(table_parts(root, "claims")[0]).to_pylist()
    tests = pq.read_table(table_parts(root, "lab_tests")[0]).to_pylist()
    assert {c["person_key"] for c in claims} == {t["person_key"] for t in tests}
    (rule,) = load_catalogue(only=["duplicate_billing"])
    with open_extract(root, threads=1, memory_limit="500MB") as con:
        dup = run_rule(con, rule, date(2025, 12, 31)).findings.to_pylist()
    # the performing lab's line is the genuine one; the polyclinic's is at risk
    assert [(f["item_ids"], f["detail"]) for f in dup] == [(["fund|C-poly"], "across_systems")]
    engine.dispose()


def _views(root: Any, sql: str) -> list[tuple[Any, ...]]:
    with open_extract(root, threads=1, memory_limit="500MB") as con:
        return con.sql(sql).fetchall()


def test_payments_capitation_and_claim_payments_from_the_store(settings: Settings) -> None:
    """A PaymentReconciliation as the fund_capitation mapping writes it is a capitation
    row; one whose details name claims is one claim payment per detail."""
    engine = make_engine(settings.resolved_database_url)
    keys = keyring_for(settings.resolved_key_file)
    ext = "https://usmis.kz/fhir/StructureDefinition/"
    with transaction(engine) as conn:
        svc = FhirService(conn, keys)
        org = _org(svc, "123456789012", "polyclinic")
        pt = svc.create(patient("ehr_a", "a-1")).resource["id"]
        link_source_patient(conn, settings, pt)
        c1 = svc.create(claim("fund", "C-1", pt, org, "2025-03-04")).resource["id"]
        svc.create(claim("fund", "C-2", pt, org, "2025-03-05"))
        svc.create({
            "resourceType": "PaymentReconciliation", "status": "active",
            "identifier": [{"system": f"{SRC}/fund_capitation/payment", "value": "CP00000007"}],
            "meta": {"source": "https://usmis.kz/source/fund_capitation"},
            "created": "2025-03-01", "paymentDate": "2025-03-01",
            "paymentAmount": {"value": 115000.0, "currency": "KZT"},
            "requestor": {"identifier": {"system": "https://usmis.kz/sid/bin",
                                         "value": "123456789012"}},
            "period": {"start": "2025-03-01"},
            "extension": [
                {"url": ext + "attached-count", "valueInteger": 100},
                {"url": ext + "capitation-rate", "valueMoney": {"value": 1150.0,
                                                                "currency": "KZT"}}]})
        svc.create({
            "resourceType": "PaymentReconciliation", "status": "active",
            "identifier": [{"system": f"{SRC}/fund/payment", "value": "RA-9"}],
            "created": "2025-04-10", "paymentDate": "2025-04-10",
            "paymentAmount": {"value": 7000.0, "currency": "KZT"},
            "requestor": {"reference": f"Organization/{org}"},
            "detail": [
                {"type": {"coding": [{"code": "payment"}]},
                 "request": {"reference": f"Claim/{c1}"}, "amount": {"value": 3500.0}},
                {"type": {"coding": [{"code": "payment"}]}, "date": "2025-04-11",
                 "request": {"identifier": {"system": f"{SRC}/fund/claim", "value": "C-2"}},
                 "amount": {"value": 3500.0}}]})

    manifest = build_store_extract(settings, as_of=date(2025, 12, 31))
    assert manifest.rows["payments"] == 3
    root = extract_dir(settings)
    rows = sorted(_views(root, "SELECT payment_id, kind, claim_id, provider_id, period_month, "
                               "paid_date, amount, attached_count, rate, source_system "
                               "FROM payments"))
    assert rows == [
        ("fund_capitation|CP00000007", "capitation", None, "123456789012", date(2025, 3, 1),
         date(2025, 3, 1), 115000.0, 100, 1150.0, "fund_capitation"),
        ("fund|RA-9#1", "claim", "fund|C-1", "123456789012", None, date(2025, 4, 10),
         3500.0, None, None, "fund"),
        ("fund|RA-9#2", "claim", "fund|C-2", "123456789012", None, date(2025, 4, 11),
         3500.0, None, None, "fund"),
    ]
    # the claim payments name claim lines of the extract
    assert _views(root, "SELECT count(*) FROM payments p JOIN claims c USING (claim_id)") \
        == [(2,)]
    engine.dispose()


def _person(source: str, local: str, family: str, born: str) -> dict[str, Any]:
    """A source Patient without IIN: the patient index keeps different people apart."""
    return {"resourceType": "Patient",
            "identifier": [{"system": f"{SRC}/{source}/patient", "value": local}],
            "name": [{"family": family, "given": ["Тест"]}], "gender": "male",
            "birthDate": born, "address": [{"state": "г. Алматы"}]}


def test_incremental_extract_follows_merge_and_split_of_persons(settings: Settings) -> None:
    """Links change without the resources changing: after the patient index merges two
    persons, an incremental run (no --full) gives both people's claims one person key;
    after a split, two again.  Only the moved record's compartment is read again."""
    from usmis.mpi.service import merge, split

    engine = make_engine(settings.resolved_database_url)
    keys = keyring_for(settings.resolved_key_file)
    with transaction(engine) as conn:
        svc = FhirService(conn, keys)
        org = _org(svc, "123456789012", "polyclinic")
        a = svc.create(_person("ehr_a", "a-1", "Омаров", "1961-02-03")).resource["id"]
        b = svc.create(_person("ehr_b", "b-1", "Сейтказиев", "1994-11-20")).resource["id"]
        person_a = link_source_patient(conn, settings, a)
        person_b = link_source_patient(conn, settings, b)
        svc.create(claim("ehr_a", "c1", a, org, "2025-04-01"))
        svc.create(claim("ehr_b", "c2", b, org, "2025-04-02"))
    assert person_a != person_b
    root = extract_dir(settings)
    claim_keys = "SELECT DISTINCT person_key FROM claims"

    build_store_extract(settings, as_of=date(2025, 12, 31))
    assert len(_views(root, claim_keys)) == 2

    with transaction(engine) as conn:
        merge(conn, person_b, person_a, actor="registrar", reason="one person, two records")
    merged = build_store_extract(settings, as_of=date(2025, 12, 31))
    assert merged.parts == 2
    (only,) = _views(root, claim_keys)
    # b's compartment (its Patient and claim) read again, nothing else
    assert [pq.read_table(p).num_rows for p in table_parts(root, "claims")] == [2, 1]
    assert [pq.read_table(p).num_rows for p in table_parts(root, "persons")] == [2, 1]
    assert _views(root, "SELECT DISTINCT person_key FROM persons") == [only]
    with transaction(engine) as conn:
        mapped = conn.execute(select(oversight_pseudonym.c.person_key)
                              .where(oversight_pseudonym.c.pseudonym == only[0])).scalar_one()
    assert mapped == person_a

    quiet = build_store_extract(settings, as_of=date(2025, 12, 31))  # nothing changed since
    assert quiet.rows["claims"] == merged.rows["claims"] == 3

    with transaction(engine) as conn:
        split(conn, person_a, [b], actor="registrar", reason="two people after all")
    build_store_extract(settings, as_of=date(2025, 12, 31))
    assert len(_views(root, claim_keys)) == 2
    assert len({k for (k,) in _views(root, "SELECT person_key FROM claims")} - {only[0]}) == 1

    full = build_store_extract(settings, full=True, as_of=date(2025, 12, 31))
    assert (full.parts, full.rows["claims"]) == (1, 2)
    assert len(_views(root, claim_keys)) == 2
    engine.dispose()


def test_relinked_stay_keeps_what_the_fund_claim_added(settings: Settings) -> None:
    """A stay is one row merged from the hospital's Encounter and the fund's claim; when
    the patient index merges the hospital patient's person into another, the incremental
    run re-keys that row (its case group, which only the claim carries, stays) and the
    fund claim that took the stay's person follows the merged person too."""
    from usmis.mpi.service import merge

    engine = make_engine(settings.resolved_database_url)
    keys = keyring_for(settings.resolved_key_file)
    with transaction(engine) as conn:
        svc = FhirService(conn, keys)
        hosp = _org(svc, "333333333333", "hospital")
        h = svc.create(patient("his_x", "h-1")).resource["id"]
        h2 = svc.create(patient("ehr_b", "b-1")).resource["id"]  # same IIN: same person
        other = svc.create(_person("ehr_a", "a-9", "Омаров", "1961-02-03")).resource["id"]
        fund = svc.create({"resourceType": "Patient", "identifier": [
            {"system": f"{SRC}/fund/patient", "value": "F-1"}]}).resource["id"]
        person_h, _, person_other, _ = (link_source_patient(conn, settings, p)
                                        for p in (h, h2, other, fund))
        svc.create(encounter("his_x", "S-1", "IMP", h, hosp,
                             "2025-04-01T09:00:00+05:00", "2025-04-06T12:00:00+05:00"))
        stay_claim = claim("fund", "C-S1", fund, hosp, "2025-04-01", "K05X", 250_000)
        stay_claim["type"]["coding"][0]["code"] = "institutional"
        stay_claim["item"][0].pop("servicedDate")
        stay_claim["item"][0]["servicedPeriod"] = {"start": "2025-04-01", "end": "2025-04-06"}
        svc.create(_bills(stay_claim, "his_x", "S-1"))
    root = extract_dir(settings)
    stays = "SELECT person_key, case_group, discharge_date FROM stays"
    claim_person = "SELECT person_key FROM claims"

    build_store_extract(settings, as_of=date(2025, 12, 31))
    ((before, group, out),) = _views(root, stays)
    assert (group, out) == ("K05X", date(2025, 4, 6))
    assert _views(root, claim_person) == [(before,)]  # the billed stay's person

    with transaction(engine) as conn:
        merge(conn, person_h, person_other, actor="registrar", reason="one person")
    build_store_extract(settings, as_of=date(2025, 12, 31))
    ((after, group, out),) = _views(root, stays)
    assert after != before
    assert (group, out) == ("K05X", date(2025, 4, 6))
    assert _views(root, claim_person) == [(after,)]
    assert {k for (k,) in _views(root, "SELECT person_key FROM persons")} >= {after}
    assert before not in {k for (k,) in _views(root, "SELECT person_key FROM persons")}
    with transaction(engine) as conn:
        mapped = conn.execute(select(oversight_pseudonym.c.person_key)
                              .where(oversight_pseudonym.c.pseudonym == after)).scalar_one()
    assert mapped == person_other
    engine.dispose()
