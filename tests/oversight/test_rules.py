"""Each rule on small hand-made extracts: cases that must fire and cases that must not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from usmis.oversight.catalogue import load_catalogue

from .factories import ExtractBuilder, d, days, run

CONTRACT_SCHEMES = {
    "after_death", "phantom_attachment", "impossible_day", "two_places", "duplicate_billing",
    "sex_age_incompatible", "excess_units", "no_indication", "upcoding", "volume_spike",
    "ineligible_practitioner",
}


def ids(findings: list[dict]) -> list[str]:
    return sorted(i for f in findings for i in f["item_ids"])


def test_catalogue_covers_every_contract_scheme_with_metadata() -> None:
    rules = load_catalogue()
    assert {r.id for r in rules} == CONTRACT_SCHEMES
    for r in rules:
        assert r.version >= 1
        assert r.title
        assert r.catches
        assert r.basis
        assert r.amount_method
        assert r.evidence_columns
        assert r.data


def test_after_death_fires_only_strictly_after_death(tmp_path: Path) -> None:
    b = ExtractBuilder()
    b.org("P1")
    b.person("dead", died="2025-03-10")
    b.person("alive")
    b.claim("same-day", "dead", "P1", "2025-03-10", "A01", 100)
    b.claim("day-after", "dead", "P1", "2025-03-11", "A01", 100)
    b.claim("months-after", "dead", "P1", "2025-06-01", "LAB1", 40, kind="lab")
    b.claim("before", "dead", "P1", "2025-02-01", "A01", 100)
    b.claim("living", "alive", "P1", "2025-06-01", "A01", 100)
    (f,) = run(b, tmp_path, "after_death")
    assert f["item_ids"] == ["day-after", "months-after"]
    assert f["amount_at_risk"] == pytest.approx(140)
    ev = json.loads(f["evidence"])
    assert {e["kind"] for e in ev} == {"claim", "death"}
    assert all(e["source_system"] for e in ev)
    assert f["region"] == "ALA"
    assert f["expected_recovery"] == pytest.approx(140 * 0.97)


def test_phantom_attachment_dead_emigrated_and_never_seen(tmp_path: Path) -> None:
    b = ExtractBuilder()
    b.org("PC")
    b.tariff("CAPITA", 1000, kind="capitation")
    b.person("dead", died="2025-06-15")
    b.person("gone", emigrated="2025-10-01")
    b.person("ghost")
    b.person("seen")
    b.person("dead-detached", died="2025-06-15")
    b.person("new")
    b.person("left")
    b.person("ghost-new", died="2025-01-20")
    for key, start, end in [("dead", "2020-01-01", None), ("gone", "2020-01-01", None),
                            ("ghost", "2020-01-01", None), ("seen", "2020-01-01", None),
                            ("dead-detached", "2020-01-01", "2025-06-20"),
                            ("new", "2025-01-01", None),
                            # detached in the window: "never seen for 24 months" cannot be said
                            ("left", "2020-01-01", "2024-03-15"),
                            # attached on 1 Oct 2025 though dead since January: Oct-Dec
                            ("ghost-new", "2025-10-01", None)]:
        b.add("attachments", attachment_id=f"att-{key}", person_key=key, org_id="PC",
              start_date=d(start), end_date=d(end) if end else None)
    b.claim("c-seen", "seen", "PC", "2024-05-01", "A01", 10)
    b.claim("c-ghost-old", "ghost", "PC", "2023-06-01", "A01", 10)
    found = {f["item_ids"][0]: f for f in run(b, tmp_path, "phantom_attachment")}
    # dead 15 June: paid on 1 Jul..1 Dec = 6 months; emigrated 1 Oct: 1 Nov, 1 Dec = 2 months
    assert found["att-dead"]["detail"] == "dead"
    assert found["att-dead"]["amount_at_risk"] == pytest.approx(6000)
    assert found["att-gone"]["detail"] == "emigrated"
    assert found["att-gone"]["amount_at_risk"] == pytest.approx(2000)
    # never seen since mid-2023: the whole 24-month window (1 Jan 2024 .. 1 Dec 2025)
    assert found["att-ghost"]["detail"] == "no_contact"
    assert found["att-ghost"]["amount_at_risk"] == pytest.approx(24000)
    # seen in 2024; detached 5 days after death (no month start); attached less than 24 months
    assert "att-seen" not in found
    assert "att-dead-detached" not in found
    assert "att-new" not in found
    assert "att-left" not in found
    assert found["att-ghost-new"]["amount_at_risk"] == pytest.approx(3000)


def test_phantom_attachment_values_each_month_at_the_rate_paid(tmp_path: Path) -> None:
    """The paid capitation rate of that polyclinic and month wins over the tariff; a month
    the extract holds no payment for falls back to the tariff."""
    b = ExtractBuilder()
    b.org("PC")
    b.org("PC2")
    b.tariff("CAPITA", 1000, kind="capitation")
    b.person("dead", died="2025-06-15")  # at risk: 1 Jul .. 1 Dec 2025 (6 months)
    b.add("attachments", attachment_id="att-dead", person_key="dead", org_id="PC",
          start_date=d("2020-01-01"), end_date=None)
    for month in ("2025-07-01", "2025-08-01", "2025-09-01"):  # paid at 1 200
        b.add("payments", payment_id=f"cap-{month}", kind="capitation", provider_id="PC",
              period_month=d(month), paid_date=d(month), amount=120_000.0,
              attached_count=100, rate=1200.0)
    # no rate column: amount / attached people (1 300)
    b.add("payments", payment_id="cap-oct", kind="capitation", provider_id="PC",
          period_month=d("2025-10-01"), paid_date=d("2025-10-01"), amount=130_000.0,
          attached_count=100, rate=None)
    # another polyclinic's payment and a claim payment do not count
    b.add("payments", payment_id="cap-other", kind="capitation", provider_id="PC2",
          period_month=d("2025-11-01"), amount=900_000.0, attached_count=100, rate=9000.0)
    b.add("payments", payment_id="pay-claim", kind="claim", claim_id="c1", provider_id="PC",
          paid_date=d("2025-11-01"), amount=5000.0)
    (f,) = run(b, tmp_path, "phantom_attachment")
    # Jul-Sep at 1 200, Oct at 1 300, Nov and Dec at the tariff's 1 000
    assert f["amount_at_risk"] == pytest.approx(3 * 1200 + 1300 + 2 * 1000)
    (ev,) = json.loads(f["evidence"])
    assert (ev["months"], ev["paid_months"]) == (6, 4)
    assert ev["rate"] == pytest.approx(6900 / 6)


def test_impossible_day_patients_and_minutes(tmp_path: Path) -> None:
    b = ExtractBuilder()
    b.org("PC")
    b.tariff("VISIT", 1000, std_minutes=15)
    b.tariff("LONG", 5000, std_minutes=120)
    n = 0
    for i in range(200):  # 200 patients in one day
        n += 1
        b.claim(f"busy-{n}", f"p{i}", "PC", "2025-04-01", "VISIT", 1000, practitioner="DR1")
    for i in range(24):  # a normal full day
        n += 1
        b.claim(f"norm-{n}", f"p{i}", "PC", "2025-04-01", "VISIT", 1000, practitioner="DR2")
    for i in range(8):  # 8 patients but 16 hours of billed minutes
        n += 1
        b.claim(f"long-{n}", f"p{i}", "PC", "2025-04-02", "LONG", 5000, practitioner="DR3")
    found = {f["practitioner_id"]: f for f in run(b, tmp_path, "impossible_day")}
    assert set(found) == {"DR1", "DR3"}
    assert found["DR1"]["detail"] == "patients"
    # the whole impossible day is at risk
    assert found["DR1"]["amount_at_risk"] == pytest.approx(200_000)
    assert len(found["DR1"]["item_ids"]) == 200
    assert found["DR3"]["detail"] == "minutes"
    assert found["DR3"]["amount_at_risk"] == pytest.approx(40_000)


def test_two_places_strictly_inside_stay_and_true_overlaps_only(tmp_path: Path) -> None:
    b = ExtractBuilder()
    b.org("H1", "hospital")
    b.org("H2", "hospital")
    b.org("PC")
    b.person("x")
    b.stay("s1", "x", "H1", "2025-03-01", "2025-03-10")
    b.claim("cs1", "x", "H1", "2025-03-01", "CG1", 300000, kind="stay", record_type="stay",
            record_id="s1")
    b.claim("on-admit", "x", "PC", "2025-03-01", "VISIT", 1000)
    b.claim("inside", "x", "PC", "2025-03-05", "VISIT", 1000)
    b.claim("on-discharge", "x", "PC", "2025-03-10", "VISIT", 1000)
    # readmission on the day of discharge: not an overlap
    b.stay("s2", "x", "H2", "2025-03-10", "2025-03-15")
    b.claim("cs2", "x", "H2", "2025-03-10", "CG1", 300000, kind="stay", record_type="stay",
            record_id="s2")
    # admitted to another hospital while still in s2: an overlap
    b.stay("s3", "x", "H1", "2025-03-12", "2025-03-20")
    b.claim("cs3", "x", "H1", "2025-03-12", "CG2", 200000, kind="stay", record_type="stay",
            record_id="s3")
    found = run(b, tmp_path, "two_places")
    by = {f["item_ids"][0]: f for f in found}
    assert set(by) == {"inside", "cs3"}
    assert by["inside"]["detail"] == "outpatient_during_stay"
    assert by["cs3"]["detail"] == "overlapping_stays"
    assert by["cs3"]["amount_at_risk"] == pytest.approx(200000)


def test_duplicate_billing_within_and_across_systems(tmp_path: Path) -> None:
    b = ExtractBuilder()
    b.org("PC")
    b.tariff("VISIT", 1000)
    b.tariff("INJ", 200, max_units_per_day=3)
    b.person("x")
    b.claim("a1", "x", "PC", "2025-04-01", "VISIT", 1000, billing_system="his-a")
    b.claim("a2", "x", "PC", "2025-04-01", "VISIT", 1000, billing_system="his-a")
    b.claim("b1", "x", "PC", "2025-05-01", "VISIT", 1000, billing_system="his-a")
    b.claim("b2", "x", "PC", "2025-05-01", "VISIT", 1000, billing_system="ehr-b")
    # same code on another day; a code allowed several times a day: not duplicates
    b.claim("c1", "x", "PC", "2025-05-02", "VISIT", 1000)
    b.claim("i1", "x", "PC", "2025-05-03", "INJ", 200)
    b.claim("i2", "x", "PC", "2025-05-03", "INJ", 200)
    # a lab test billed by the laboratory and again by the ordering polyclinic
    b.org("LAB", "lab")
    b.tariff("CBC", 2100, kind="lab")
    b.claim("lab-1", "x", "PC", "2025-06-01", "CBC", 2100, kind="lab", billing_system="ehr-b")
    b.claim("lab-2", "x", "LAB", "2025-06-01", "CBC", 2100, kind="lab", billing_system="lis")
    found = {f["item_ids"][0]: f for f in run(b, tmp_path, "duplicate_billing")}
    assert set(found) == {"a2", "b2", "lab-1"}
    assert found["lab-1"]["provider_id"] == "PC"
    assert found["a2"]["detail"] == "within_system"
    assert found["b2"]["detail"] == "across_systems"
    assert found["b2"]["amount_at_risk"] == pytest.approx(1000)


def test_sex_age_incompatible_with_birth_month_ambiguity(tmp_path: Path) -> None:
    b = ExtractBuilder()
    b.org("PC")
    b.tariff("CERV", 3000, sex="F")
    b.tariff("PAED", 2000, max_age=17)
    b.person("man", sex="M", born="1980-05")
    b.person("woman", sex="F", born="1980-05")
    b.person("teen", sex="F", born="2007-06")
    b.claim("cerv-man", "man", "PC", "2025-04-01", "CERV", 3000)
    b.claim("cerv-woman", "woman", "PC", "2025-04-01", "CERV", 3000)
    # turns 18 in June 2025: in her birth month she may still be 17 -> must not fire
    b.claim("paed-birth-month", "teen", "PC", "2025-06-15", "PAED", 2000)
    b.claim("paed-before", "teen", "PC", "2025-05-15", "PAED", 2000)
    b.claim("paed-after", "teen", "PC", "2025-07-01", "PAED", 2000)
    found = {f["item_ids"][0]: f["detail"] for f in run(b, tmp_path, "sex_age_incompatible")}
    assert found == {"cerv-man": "sex", "paed-after": "too_old"}


def test_sex_age_incompatible_needs_every_linked_source_to_agree(tmp_path: Path) -> None:
    """One linked person, several source records: a source with a swapped day and month
    (born 2024-03-11 written 2024-11-03) or a mistyped sex cannot make a finding alone."""
    b = ExtractBuilder()
    b.org("PC")
    b.tariff("PAED", 2000, min_age=0, max_age=17)
    b.tariff("CERV", 3000, sex="F")
    b.person("baby", sex="F", born="2024-03")
    b.add("persons", person_key="baby", sex="F", birth_year=2024, birth_month=11)
    b.claim("paed-baby", "baby", "PC", "2024-05-02", "PAED", 2000)  # under 0? not for sure
    b.claim("paed-unborn", "baby", "PC", "2024-02-01", "PAED", 2000)  # before any birth
    b.person("woman", sex="F", born="1980-05")
    b.add("persons", person_key="woman", sex="M", birth_year=1980, birth_month=5)
    b.claim("cerv-woman", "woman", "PC", "2025-04-01", "CERV", 3000)
    b.person("man", sex="M", born="1980-05")
    b.add("persons", person_key="man", sex="M", birth_year=1980, birth_month=5)
    b.claim("cerv-man", "man", "PC", "2025-04-01", "CERV", 3000)
    found = {f["item_ids"][0]: f["detail"] for f in run(b, tmp_path, "sex_age_incompatible")}
    assert found == {"paed-unborn": "too_young", "cerv-man": "sex"}


def test_excess_units_per_day_and_dose_times_days(tmp_path: Path) -> None:
    b = ExtractBuilder()
    b.org("PC")
    b.org("PH", "pharmacy")
    b.tariff("INJ", 200, max_units_per_day=3)
    b.tariff("N02BE01", 10, kind="drug", max_daily_dose=8)
    b.person("x")
    b.claim("inj-ok", "x", "PC", "2025-04-01", "INJ", 600, quantity=3)
    b.claim("inj-bad", "x", "PC", "2025-04-02", "INJ", 1000, quantity=5)
    b.add("dispensations", dispensation_id="d1", person_key="x", org_id="PH",
          dispense_date=d("2025-04-01"), atc="N02BE01", quantity=80, days_supply=10)
    b.add("dispensations", dispensation_id="d2", person_key="x", org_id="PH",
          dispense_date=d("2025-04-01"), atc="N02BE01", quantity=200, days_supply=10)
    b.claim("drug-ok", "x", "PH", "2025-04-01", "N02BE01", 800, quantity=80, kind="drug",
            record_type="dispensation", record_id="d1")
    b.claim("drug-bad", "x", "PH", "2025-04-01", "N02BE01", 2000, quantity=200, kind="drug",
            record_type="dispensation", record_id="d2")
    found = {f["item_ids"][0]: f for f in run(b, tmp_path, "excess_units")}
    assert set(found) == {"inj-bad", "drug-bad"}
    assert found["inj-bad"]["amount_at_risk"] == pytest.approx(400)
    assert found["drug-bad"]["amount_at_risk"] == pytest.approx(1200)


def test_no_indication_needs_an_indicating_diagnosis_in_any_system(tmp_path: Path) -> None:
    b = ExtractBuilder()
    b.org("PH", "pharmacy")
    b.add("indications", atc="A10", icd10_prefix="E11")
    b.person("diabetic")
    b.person("healthy")
    b.person("late-dx")
    b.add("diagnoses", diagnosis_id="g1", person_key="diabetic", org_id="PC",
          diagnosis_date=d("2024-01-01"), icd10="E11.9", source_system="other-ehr")
    b.add("diagnoses", diagnosis_id="g2", person_key="late-dx", org_id="PC",
          diagnosis_date=d("2025-08-01"), icd10="E11.9")
    for key in ("diabetic", "healthy", "late-dx"):
        b.claim(f"met-{key}", key, "PH", "2025-04-01", "A10BA02", 500, kind="drug")
    # a drug without listed indications is not judged
    b.claim("unlisted", "healthy", "PH", "2025-04-01", "N02BE01", 50, kind="drug")
    found = run(b, tmp_path, "no_indication")
    assert ids(found) == ["met-healthy", "met-late-dx"]


def _case_groups(b: ExtractBuilder) -> None:
    b.tariff("CG-LO", 100_000, kind="case_group", case_family="pneumonia", expensive=False)
    b.tariff("CG-HI", 400_000, kind="case_group", case_family="pneumonia", expensive=True)


def test_upcoding_flags_outlier_but_shrinks_small_providers(tmp_path: Path) -> None:
    b = ExtractBuilder()
    _case_groups(b)
    n = 0

    def cases(provider: str, total: int, expensive: int) -> None:
        nonlocal n
        for i in range(total):
            n += 1
            hi = i < expensive
            b.claim(f"{provider}-{n}", f"p{n}", provider, "2025-03-01",
                    "CG-HI" if hi else "CG-LO", 400_000 if hi else 100_000, kind="stay")

    for i, share in enumerate([0.18, 0.22, 0.20, 0.19, 0.21, 0.20]):
        b.org(f"H{i}", "hospital")
        cases(f"H{i}", 200, int(200 * share))
    b.org("UP", "hospital")
    cases("UP", 200, 120)  # 60% expensive
    b.org("SMALL", "hospital")
    cases("SMALL", 20, 8)  # 40% but only 20 cases: shrunk toward the peers
    found = run(b, tmp_path, "upcoding")
    assert [f["provider_id"] for f in found] == ["UP"]
    (f,) = found
    assert len(f["item_ids"]) == 120
    # peer median share of providers with >= 20 cases: 0.205; the expensive payments beyond it
    assert f["amount_at_risk"] == pytest.approx(120 * 400_000 * (1 - 200 * 0.205 / 120))
    assert 0.5 < f["likelihood"] <= 1


def test_upcoding_small_upcoder_is_not_left_out_by_a_cut_off(tmp_path: Path) -> None:
    """A hospital below the peer group's size (15 of 17 cases expensive) is still judged:
    the prior is fitted to every provider, so a fit over large, alike peers cannot shrink
    it to nothing, while a small hospital with an ordinary mix stays quiet."""
    b = ExtractBuilder()
    _case_groups(b)
    n = 0

    def cases(provider: str, total: int, expensive: int) -> None:
        nonlocal n
        b.org(provider, "hospital")
        for i in range(total):
            n += 1
            hi = i < expensive
            b.claim(f"{provider}-{n}", f"p{n}", provider, "2025-03-01",
                    "CG-HI" if hi else "CG-LO", 400_000 if hi else 100_000, kind="stay")

    for i, (total, expensive) in enumerate([(38, 2), (37, 2), (35, 3), (34, 0), (32, 4),
                                            (31, 2), (30, 6)]):
        cases(f"H{i}", total, expensive)
    cases("UP", 17, 15)
    cases("SMALL", 12, 2)  # 17 %: a small hospital with an ordinary mix
    cases("TINY", 3, 2)  # two expensive cases of three prove nothing
    found = run(b, tmp_path, "upcoding")
    assert [f["provider_id"] for f in found] == ["UP"]


def test_volume_spike_against_own_history_and_peers(tmp_path: Path) -> None:
    b = ExtractBuilder()
    b.tariff("VISIT", 1000)
    n = 0
    for p in range(8):
        b.org(f"PC{p}")
        for mi in range(10):
            lines = 100 + 3 * p + (mi % 3)
            if p == 0 and mi == 8:
                lines = 400  # the spike: 4× its own history
            if mi == 9:
                lines = int(lines * 1.6)  # a season that lifts everyone: no spike
            for k in range(lines):
                n += 1
                day = f"2025-{mi + 1:02d}-{1 + k % 28:02d}"  # spread over the month
                b.claim(f"c{n}", f"x{n % 50}", f"PC{p}", day, "VISIT", 10_000)
            if p == 1 and mi == 4:
                # one impossible day (300 extra lines on the 10th): impossible_day's
                # finding, not a volume spike
                for _ in range(300):
                    n += 1
                    b.claim(f"c{n}", f"x{n % 50}", "PC1", "2025-05-10", "VISIT", 10_000)
    found = run(b, tmp_path, "volume_spike")
    assert [(f["provider_id"], f["period_start"]) for f in found] == [("PC0", d("2025-09-01"))]
    assert found[0]["amount_at_risk"] == pytest.approx(4_000_000 - 1_010_000, rel=0.05)


def test_ineligible_practitioner_licence_employment_death(tmp_path: Path) -> None:
    b = ExtractBuilder()
    b.org("PC")
    b.org("OTHER")
    b.person("x")
    b.practitioner("ok", "PC")
    b.practitioner("expired", "PC", licensed=("2010-01-01", "2024-12-31"))
    b.practitioner("elsewhere", "OTHER")
    b.practitioner("dead", "PC", died="2025-01-31")
    b.practitioner("left", "PC", employed=("2010-01-01", "2025-03-31"))
    for p in ("ok", "expired", "elsewhere", "dead", "left"):
        b.claim(f"{p}-1", "x", "PC", "2025-04-01", "VISIT", 1000, practitioner=p)
    b.claim("dead-on-day", "x", "PC", "2025-01-31", "VISIT", 1000, practitioner="dead")
    b.claim("left-before", "x", "PC", "2025-03-31", "VISIT", 1000, practitioner="left")
    found = {f["practitioner_id"]: f for f in run(b, tmp_path, "ineligible_practitioner")}
    assert {k: v["detail"] for k, v in found.items()} == {
        "expired": "unlicensed", "elsewhere": "not_employed", "dead": "dead",
        "left": "not_employed",
    }
    assert found["dead"]["item_ids"] == ["dead-1"]
    assert found["left"]["item_ids"] == ["left-1"]


def test_every_rule_runs_on_an_empty_extract(tmp_path: Path) -> None:
    for rule in load_catalogue():
        assert run(ExtractBuilder(), tmp_path / rule.id, rule.id) == []


def test_days_helper() -> None:
    assert days("2025-01-30", 3) == ["2025-01-30", "2025-01-31", "2025-02-01"]
