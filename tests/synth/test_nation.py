"""The synthetic nation: feeds parse, labels are true, rates hold, fraud amounts reproduce.

The amount checks re-derive every scheme's amount from the feeds alone (plus the true
person of each fund record), with the formulas of docs/nation.md — what an oversight rule
must do — and compare with ground_truth/fraud.csv.
"""

from __future__ import annotations

import hashlib
import math
import os
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import pytest

from usmis.mpi.iin import is_valid_iin
from usmis.synth import SynthSummary, generate

from .conftest import FRAUD, NOISE, PEOPLE
from .feeds import Claim, Nation, claims, num, parse_date

SCHEMES = {"after_death", "phantom_attachment", "impossible_day", "two_places",
           "duplicate_billing", "sex_age_incompatible", "excess_units", "no_indication",
           "upcoding", "volume_spike", "ineligible_practitioner"}
PERIOD_START = date(2024, 1, 1)
PERIOD_END = date(2025, 12, 31)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _within(observed: int, n: int, rate: float, sigmas: float = 4.0) -> bool:
    expected = n * rate
    return abs(observed - expected) <= sigmas * math.sqrt(max(n * rate * (1 - rate), 1.0)) + 1


# -- determinism -------------------------------------------------------------------------------
def test_same_arguments_give_byte_identical_output(tmp_path: Path) -> None:
    generate(tmp_path / "a", 300, 11)
    generate(tmp_path / "b", 300, 11)
    generate(tmp_path / "c", 300, 12)
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert len(a) > 50
    assert a["ground_truth/people.csv"] != c["ground_truth/people.csv"]
    assert a["feeds/reg_population/reg_population.csv"] != \
        c["feeds/reg_population/reg_population.csv"]


def test_output_does_not_depend_on_string_hashing(tmp_path: Path) -> None:
    """Byte-identical across processes with different PYTHONHASHSEED (no set-order leaks)."""
    code = "import sys; from usmis.synth import generate; generate(sys.argv[1], 150, 5)"
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / seed)], env=env, check=True)
    assert _digest(tmp_path / "1") == _digest(tmp_path / "2")


def test_output_folder_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(FileExistsError):
        generate(tmp_path, 10, 1)


# -- the description ---------------------------------------------------------------------------
def test_sources_describe_every_feed(nation: Nation) -> None:
    assert len(nation.sources) >= 30
    kinds = Counter(s["kind"] for s in nation.sources)
    assert kinds["hospital"] >= 5
    assert kinds["lab"] >= 3
    assert kinds["polyclinic"] >= 4
    assert kinds["pharmacy"] >= 4
    assert kinds["registry"] >= 10
    assert kinds["insurer"] >= 4
    assert {s["encoding"] for s in nation.sources} == {"utf-8", "cp1251"}
    assert {s["channel"] for s in nation.sources} == {"mllp", "fhir", "file"}
    assert {s.get("bundle_type") for s in nation.sources} >= {"transaction", "batch"}
    for s in nation.sources:
        assert s["files"], s["id"]
        for f in s["files"]:
            assert (nation.root / f).is_file()
        if s["channel"] == "file":
            assert s["columns"]
            assert all(s["columns"].values())


# -- every feed parses with its standard parser ------------------------------------------------
@pytest.fixture(scope="module")
def parsed(nation: Nation) -> tuple[Counter[tuple[str, str]], dict[tuple[str, str], set[str]]]:
    """One pass over every feed with its standard parser: record counts by kind, and the
    IINs each source's records carry per local patient id."""
    counted: Counter[tuple[str, str]] = Counter()
    iins: dict[tuple[str, str], set[str]] = defaultdict(set)
    for s in nation.sources:
        sid = s["id"]
        if s["format"] == "hl7v2":
            for _, _, msg in nation.hl7_messages(sid):
                kind = str(msg.segment("MSH")[9])
                counted[(sid, "^".join(kind.split("^")[:2]))] += 1
                local, iin = "", ""
                for rep in str(msg.segment("PID")[3]).split("~"):
                    comps = rep.split("^")
                    if comps[3] == "KZIIN":
                        iin = comps[0]
                    else:
                        local = comps[0]
                iins[(sid, local)].add(iin)
        elif s["format"] == "fhir-bundle":
            for _, _, obj in nation.bundles(sid):
                b = nation.validate_bundle(obj)
                assert b.type == s["bundle_type"]
                counted[(sid, "Bundle")] += 1
                for e in obj["entry"]:
                    r = e["resource"]
                    if r["resourceType"] == "Patient":
                        ids = {i["system"]: i["value"] for i in r["identifier"]}
                        local = ids[f"https://usmis.kz/sid/source/{sid}/patient"]
                        iins[(sid, local)].add(ids.get("https://usmis.kz/sid/iin", ""))
        else:
            iin_col = next((c for c in s["columns"] if "iin" in c.lower() or "ИИН" in c), None)
            for _, _, r in nation.rows(sid):
                counted[(sid, "row")] += 1
                if s.get("patient_id_column") and iin_col:
                    iins[(sid, str(r[s["patient_id_column"]]))].add(r[iin_col] or "")
    return counted, iins


def test_every_feed_parses_except_what_is_labelled_malformed(
    nation: Nation, parsed: tuple[Counter[tuple[str, str]], dict[tuple[str, str], set[str]]],
) -> None:
    counted = parsed[0]
    expected: Counter[tuple[str, str]] = Counter()
    for r in nation.gt("counts.csv"):
        if r["kind"] in ("row", "Bundle") or "^" in r["kind"]:
            expected[(r["source_id"], r["kind"])] += int(r["well_formed"]) + \
                int(r["exact_resends"])
    # pharmacy corrections are extra well-formed rows with a repeated id
    assert counted == expected


def test_malformed_records_are_broken_and_labelled(nation: Nation) -> None:
    rows = nation.gt("malformed.csv")
    assert len(rows) > 20
    assert all(r["reason"] for r in rows)
    by_format = Counter(nation.by_id[r["source_id"]]["format"] for r in rows)
    assert {"hl7v2", "fhir-bundle", "csv"} <= set(by_format)
    total = sum(int(r["well_formed"]) for r in nation.gt("counts.csv")
                if r["kind"] in ("row", "Bundle") or "^" in r["kind"])
    assert 0.001 < len(rows) / total < 0.006


# -- IINs and identities -----------------------------------------------------------------------
def test_iin_labels_are_true(
    nation: Nation, parsed: tuple[Counter[tuple[str, str]], dict[tuple[str, str], set[str]]],
) -> None:
    people = {p["person_id"]: p for p in nation.gt("people.csv")}
    assert all(is_valid_iin(p["iin"]) for p in people.values())
    assert len({p["iin"] for p in people.values()}) == len(people)
    seen = parsed[1]
    records = nation.gt("source_records.csv")
    statuses = Counter(r["iin_status"] for r in records)
    assert statuses["missing"]
    assert statuses["mistyped_invalid"]
    assert statuses["mistyped_valid_other"]
    for r in records:
        key = (r["source_id"], r["local_id"])
        iins = seen.get(key)
        if iins is None:  # a duplicate id that happened to carry no record
            assert r["duplicate_of"], key
            continue
        true = people[r["person_id"]]["iin"]
        st = r["iin_status"]
        if st == "correct":
            assert iins == {true}, key
        elif st == "missing":
            assert iins == {""}, key
        elif st == "mistyped_invalid":
            (iin,) = iins
            assert iin != true, key
            assert not is_valid_iin(iin), key
        else:
            (iin,) = iins
            owner = people[r["iin_owner_person_id"]]
            assert is_valid_iin(iin), key
            assert iin == owner["iin"] != true, key
    # every patient id in the feeds is in the ground truth
    known = {(r["source_id"], r["local_id"]) for r in records}
    assert set(seen) <= known


def test_names_are_kazakh_and_russian(nation: Nation) -> None:
    people = nation.gt("people.csv")
    pats = [p["patronymic"] for p in people]
    assert any(x.endswith("ұлы") for x in pats)
    assert any(x.endswith("қызы") for x in pats)
    assert any(x.endswith(("ович", "евич")) for x in pats)
    assert any(x.endswith(("овна", "евна")) for x in pats)
    assert any(x.endswith(("улы", "кызы")) for x in pats)
    surnames = [p["surname"] for p in people]
    assert any(s.endswith(("ова", "ева")) for s in surnames)
    assert any(not s.endswith(("ов", "ова", "ев", "ева", "ин", "ина")) for s in surnames)
    phones = [p["phone"] for p in people if p["phone"]]
    assert all(ph.startswith("+77") and len(ph) == 12 for ph in phones)
    regions = {p["region"] for p in people}
    assert len(regions) >= 15


# -- noise rates -------------------------------------------------------------------------------
def test_noise_rates_land_near_the_configured_rates(nation: Nation) -> None:
    rec = [r for r in nation.gt("source_records.csv") if not r["duplicate_of"]
           and not r["source_id"].startswith("reg_")]
    n = len(rec)
    typo = sum("typo_surname" in r["name_noise"] for r in rec)
    assert _within(typo, n, 0.02)
    invalid = sum(r["iin_status"] == "mistyped_invalid" for r in rec)
    assert _within(invalid, n, 0.01)
    dup_sources = [r for r in rec if not r["source_id"].startswith("fund_")]
    dups = sum(1 for r in nation.gt("source_records.csv") if r["duplicate_of"])
    assert _within(dups, len(dup_sources), NOISE["duplicate_patient"])
    kinds = Counter(r["kind"] for r in nation.gt("noise.csv"))
    assert {"late", "resent", "update", "merge"} <= set(kinds)
    translit = Counter(r["name_script"] for r in rec)
    assert {"latin:icao", "latin:gost", "latin:simple", "latin:kz2021", "cyrillic_ru"} <= \
        set(translit)


# -- fraud -------------------------------------------------------------------------------------
def test_every_scheme_is_planted_and_labelled(nation: Nation) -> None:
    fraud = nation.gt("fraud.csv")
    assert {f["scheme"] for f in fraud} == SCHEMES
    items = nation.gt("fraud_items.csv")
    ids = {i["instance_id"] for i in items}
    assert all(f["instance_id"] in ids for f in fraud)
    assert all(float(f["amount_at_risk"]) >= 0 for f in fraud)
    variants = {(f["scheme"], f["variant"]) for f in fraud}
    assert {("phantom_attachment", "dead"), ("phantom_attachment", "never_seen"),
            ("two_places", "outpatient_in_stay"), ("duplicate_billing", "within_system"),
            ("duplicate_billing", "across_systems"), ("excess_units", "dose"),
            ("excess_units", "units_per_day")} <= variants


def test_fraud_rates_land_near_the_configured_rates(nation: Nation) -> None:
    people = nation.gt("people.csv")
    fraud = nation.gt("fraud.csv")
    by = Counter((f["scheme"], f["variant"]) for f in fraud)
    last_month = date(2025, 12, 1)
    dead = [p for p in people if p["death_date"]]
    dead_after = [p for p in dead if date.fromisoformat(p["death_date"]) <= date(2025, 12, 24)]
    assert _within(by[("after_death", "")], len(dead_after), FRAUD["after_death"], 5)
    dead_early = [p for p in dead if date.fromisoformat(p["death_date"]) < last_month]
    assert _within(by[("phantom_attachment", "dead")], len(dead_early),
                   FRAUD["phantom_attachment_dead"])
    adults = [p for p in people if not p["death_date"] and not p["emigration_date"]
              and p["born_in_period"] == "0"
              and date.fromisoformat(p["birth_date"]) <= date(2006, 1, 1)]
    assert _within(by[("phantom_attachment", "never_seen")], len(adults),
                   FRAUD["phantom_attachment_never_seen"])
    assert _within(by[("sex_age_incompatible", "sex")] + by[("sex_age_incompatible", "age")],
                   PEOPLE, FRAUD["sex_age_incompatible"], 5)
    assert _within(by[("no_indication", "")], PEOPLE, FRAUD["no_indication"], 5)


def test_claim_level_fraud_rates(nation: Nation, all_claims: list[Claim]) -> None:
    by = Counter((f["scheme"], f["variant"]) for f in nation.gt("fraud.csv"))
    labelled = {i["record_id"] for i in nation.gt("fraud_items.csv")}
    stays = [c for c in all_claims if c.source == "fund_claims_inpatient"
             and c.claim_id not in labelled and c.discharge is not None
             and (c.discharge - c.day).days >= 2]
    assert _within(by[("two_places", "outpatient_in_stay")], len(stays),
                   FRAUD["two_places_outpatient"], 5)
    procedures = [c for c in all_claims if c.code.startswith("A03.")]
    assert _within(by[("excess_units", "units_per_day")], len(procedures),
                   FRAUD["excess_units"], 5)
    labs = [c for c in all_claims if c.code.startswith("B03.") and c.src_system.startswith("lab")]
    assert _within(by[("duplicate_billing", "across_systems")], len(labs),
                   FRAUD["duplicate_billing_across"], 5)
    drugs = [c for c in all_claims if c.source == "fund_claims_drugs"]
    assert _within(by[("excess_units", "dose")], len(drugs), FRAUD["excess_dose"], 5)


# -- amounts reproduce from the feeds ----------------------------------------------------------
@pytest.fixture(scope="module")
def all_claims(nation: Nation) -> list[Claim]:
    return claims(nation)


def _fraud(nation: Nation, scheme: str) -> list[dict[str, str]]:
    return [f for f in nation.gt("fraud.csv") if f["scheme"] == scheme]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.02 * max(abs(a), abs(b)) + 0.01


def test_after_death_amounts(nation: Nation, all_claims: list[Claim]) -> None:
    death = {p["person_id"]: date.fromisoformat(p["death_date"])
             for p in nation.gt("people.csv") if p["death_date"]}
    found: defaultdict[str, float] = defaultdict(float)
    for c in all_claims:
        if c.person in death and c.day > death[c.person]:
            found[c.person] += c.amount
    truth = {f["person_id"]: float(f["amount_at_risk"]) for f in _fraud(nation, "after_death")}
    assert set(found) == set(truth)
    assert all(_close(found[p], truth[p]) for p in truth)


def test_phantom_attachment_amounts(nation: Nation) -> None:
    s = nation.by_id["reg_attachment"]
    fmt = s["date_format"]
    local_person = {r["local_id"]: r["person_id"] for r in nation.gt("source_records.csv")
                    if r["source_id"] == "reg_attachment"}
    people = {p["person_id"]: p for p in nation.gt("people.csv")}
    rate = 1150
    months = [date(2024 + k // 12, k % 12 + 1, 1) for k in range(24)]
    truth = {(f["person_id"], f["variant"]): float(f["amount_at_risk"])
             for f in _fraud(nation, "phantom_attachment")}
    for _, _, r in nation.rows("reg_attachment"):
        p = people[local_person[r["rpn_person_id"]]]
        start = parse_date(r["attached_from"], fmt)
        end = parse_date(r["attached_to"], fmt) if r["attached_to"] else None
        active = [m for m in months if start <= m and (end is None or end >= m)]
        for variant, ref in (("dead", p["death_date"]), ("emigrated", p["emigration_date"])):
            if ref:
                n = sum(1 for m in active if m > date.fromisoformat(ref))
                if n:
                    assert _close(truth.pop((p["person_id"], variant)), n * rate)
    never = {k: v for k, v in truth.items() if k[1] == "never_seen"}
    assert never
    assert all(v == 24 * rate for v in never.values())
    assert len(never) == len(truth)


def test_impossible_day_and_background_day_loads(nation: Nation, all_claims: list[Claim]) -> None:
    tariffs = {r["code"]: r for _, _, r in nation.rows("reg_tariffs")}
    day_amount: defaultdict[tuple[str, date], float] = defaultdict(float)
    day_patients: defaultdict[tuple[str, date], set[str]] = defaultdict(set)
    day_minutes: Counter[tuple[str, date]] = Counter()
    for c in all_claims:
        if c.source != "fund_claims_outpatient":
            continue
        t = tariffs[c.code]
        if t["category"] in ("visit", "screening", "procedure"):
            k = (c.practitioner, c.day)
            day_amount[k] += c.amount
            day_patients[k].add(c.person)
            day_minutes[k] += int(t["standard_minutes"]) * int(c.units)
    planted = {(f["practitioner_id"], date.fromisoformat(f["date_from"])): f
               for f in _fraud(nation, "impossible_day")}
    assert planted
    for k, f in planted.items():
        assert len(day_patients[k]) >= 48
        assert _close(day_amount[k], float(f["amount_at_risk"]))
    for k, pats in day_patients.items():
        if k not in planted:
            assert len(pats) <= 40, k
            assert day_minutes[k] <= 720, k


def test_duplicate_billing_amounts(nation: Nation, all_claims: list[Claim]) -> None:
    groups: defaultdict[tuple[str, str, date], list[Claim]] = defaultdict(list)
    for c in all_claims:
        groups[(c.person, c.code, c.day)].append(c)
    extra = {c.claim_id: c.amount for g in groups.values() if len(g) > 1
             for c in sorted(g, key=lambda x: x.claim_id)[1:]}
    items = {i["record_id"]: float(i["amount"]) for i in nation.gt("fraud_items.csv")
             if i["scheme"] == "duplicate_billing"}
    assert extra == items


def test_volume_spike_and_upcoding_amounts(nation: Nation, all_claims: list[Claim]) -> None:
    monthly: defaultdict[tuple[str, int], float] = defaultdict(float)
    inpatient: defaultdict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    tariffs = {r["code"]: r for _, _, r in nation.rows("reg_tariffs")}
    for c in all_claims:
        if c.source == "fund_claims_outpatient":
            monthly[(c.provider_bin, (c.day.year - 2024) * 12 + c.day.month - 1)] += c.amount
        elif c.source == "fund_claims_inpatient":
            acc = inpatient[c.provider_bin]
            acc[0] += 1
            if tariffs[c.code]["expensive_case_group"] == "1":
                acc[1] += 1
                acc[2] += c.amount
    for f in _fraud(nation, "volume_spike"):
        d = date.fromisoformat(f["date_from"])
        k = (d.year - 2024) * 12 + d.month - 1
        totals = [monthly[(f["provider_bin"], j)] for j in range(24)]
        amount = totals[k] - statistics.median(totals[:k] + totals[k + 1:])
        assert _close(amount, float(f["amount_at_risk"]))
        assert totals[k] > 3 * statistics.median(totals[:k] + totals[k + 1:])
    shares = [e / n for n, e, _ in inpatient.values() if n >= 20] or \
        [e / n for n, e, _ in inpatient.values()]
    m = statistics.median(shares)
    for f in _fraud(nation, "upcoding"):
        n, e, s = inpatient[f["provider_bin"]]
        assert _close(s - n * m * s / e, float(f["amount_at_risk"]))


def test_ineligible_practitioner_amounts(nation: Nation, all_claims: list[Claim]) -> None:
    s = nation.by_id["reg_practitioners"]
    fmt = s["date_format"]
    cutoff: dict[str, date] = {}
    for _, _, r in nation.rows("reg_practitioners"):
        ends = [parse_date(r[c], fmt) for c in ("licence_valid_to", "employed_to", "status_date")
                if r[c]]
        if ends:
            cutoff[r["practitioner_id"]] = min(ends)
    found: defaultdict[str, float] = defaultdict(float)
    for c in all_claims:
        if c.source == "fund_claims_outpatient" and c.practitioner in cutoff and \
                c.day > cutoff[c.practitioner]:
            found[c.practitioner] += c.amount
    truth = {f["practitioner_id"]: float(f["amount_at_risk"])
             for f in _fraud(nation, "ineligible_practitioner")}
    assert truth
    assert set(truth) == set(found)
    assert all(_close(found[p], truth[p]) for p in truth)


# -- the background is clean -------------------------------------------------------------------
def test_background_is_clean(nation: Nation, all_claims: list[Claim]) -> None:
    labelled = {i["record_id"] for i in nation.gt("fraud_items.csv")}
    people = {p["person_id"]: p for p in nation.gt("people.csv")}
    tariffs = {r["code"]: r for _, _, r in nation.rows("reg_tariffs")}
    drugs = {r["АТХ"]: r for _, _, r in nation.rows("reg_drug_doses")}
    stays: defaultdict[str, list[Claim]] = defaultdict(list)
    for c in all_claims:
        if c.source == "fund_claims_inpatient":
            stays[c.person].append(c)
    for c in all_claims:
        p = people[c.person]
        if c.source == "fund_claims_outpatient":
            for st in stays[c.person]:
                assert st.discharge is not None
                if st.day < c.day < st.discharge:
                    assert c.claim_id in labelled, c
            t = tariffs[c.code]
            b = date.fromisoformat(p["birth_date"])
            age = c.day.year - b.year - ((c.day.month, c.day.day) < (b.month, b.day))
            if (t["allowed_sex"] and t["allowed_sex"] != p["sex"]) or \
                    not int(t["min_age"]) <= age <= int(t["max_age"]):
                assert c.claim_id in labelled, c
            if c.units > int(t["max_units_per_day"]):
                assert c.claim_id in labelled, c
        if c.source == "fund_claims_drugs":
            d = drugs[c.code]
            allowed = math.floor(num(d["МАКС_СУТ_ДОЗА_МГ"], True) * 30 /
                                 num(d["ДОЗИРОВКА_МГ"], True) + 1e-9)
            if c.units > allowed:
                assert c.claim_id in labelled, c
        if p["death_date"] and c.day > date.fromisoformat(p["death_date"]):
            assert c.claim_id in labelled, c
        if p["emigration_date"]:
            assert c.day < date.fromisoformat(p["emigration_date"]) or c.claim_id in labelled
    for person, lst in stays.items():
        lst.sort(key=lambda x: x.day)
        for a, b2 in zip(lst, lst[1:], strict=False):
            assert a.discharge is not None
            if b2.day < a.discharge:
                assert b2.claim_id in labelled, (person, b2)


def test_summary_matches_the_ground_truth(nation_run: tuple[Nation, SynthSummary]) -> None:
    nation, summary = nation_run
    fraud = nation.gt("fraud.csv")
    assert summary.fraud_instances == dict(Counter(f["scheme"] for f in fraud))
    assert summary.malformed == len(nation.gt("malformed.csv"))
    assert summary.people == PEOPLE == len(nation.gt("people.csv"))
