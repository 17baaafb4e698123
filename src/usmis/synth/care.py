"""What happens to one person in the period: stays, visits, tests, drugs, and planted fraud.

Background care is kept clean with respect to every fraud scheme: no care after death or
emigration, no outpatient care on stay days, stays never overlap, services fit the
person's sex and age, units and doses within limits, every drug has an indicating
diagnosis recorded first, one claim per (service, day).  Fabricated events carry the
scheme that planted them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from usmis.synth.options import SynthOptions
from usmis.synth.reference import (
    CASE_GROUPS,
    CHRONIC_SPECIALITY,
    DIAGNOSES,
    DRUG_BY_ATC,
    DRUGS,
    TARIFF_BY_CODE,
)
from usmis.synth.world import Person, World

VISIT_CODE = {"therapist": "A01.001", "pediatrician": "A01.002", "gynecologist": "A01.003",
              "urologist": "A01.004", "cardiologist": "A01.005", "endocrinologist": "A01.006"}
SPEC_OF_CODE = {v: k for k, v in VISIT_CODE.items()} | {
    "A02.001": "gynecologist", "A02.003": "gynecologist", "A02.002": "urologist"}


@dataclass(slots=True)
class Visit:
    day: int
    minute: int
    code: str
    icd: str
    poly: int
    pract: int
    lab: str = ""
    lab_org: int = -1
    procedure: str = ""
    units: int = 0
    nurse: int = -1
    drug: str = ""
    quantity: int = 0
    days: int = 0
    dispense_day: int = 0
    pharmacy: int = -1
    fraud: str = ""  # scheme that fabricated this visit
    variant: str = ""
    dup_within: bool = False  # the visit claim is billed twice
    dup_across: bool = False  # the lab test is billed by the polyclinic too
    excess_units: bool = False
    excess_dose: bool = False


@dataclass(slots=True)
class Stay:
    admit: int
    admit_min: int
    discharge: int
    discharge_min: int
    hospital: int
    pract: int
    icd: str
    code: str
    expensive: bool
    upcoded: bool = False
    died: bool = False
    labs: bool = False
    fraud: str = ""


@dataclass(slots=True)
class EdVisit:
    day: int
    minute: int
    hospital: int
    pract: int
    icd: str


@dataclass(slots=True)
class Dispense:
    day: int
    drug: str
    quantity: int
    days: int
    pharmacy: int
    prescriber: int
    fraud: str


@dataclass(slots=True)
class Care:
    stays: list[Stay] = field(default_factory=list)
    visits: list[Visit] = field(default_factory=list)
    eds: list[EdVisit] = field(default_factory=list)
    dispenses: list[Dispense] = field(default_factory=list)
    never_seen: bool = False
    phantom_attachment: str = ""  # "", dead, emigrated, never_seen


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p < threshold:
            return k
        k += 1


def _age_factor(age: int) -> float:
    if age < 5:
        return 1.5
    if age < 18:
        return 0.9
    if age < 40:
        return 0.7
    if age < 65:
        return 1.0
    return 1.6


ACUTE = [d for d in DIAGNOSES if d[6] > 0]


class CarePlanner:
    """Plans one person's care; holds the fixed fraud plans that touch many people."""

    def __init__(self, opts: SynthOptions, world: World, rng: random.Random, start: int,
                 end: int, impossible: dict[tuple[int, int], int],
                 spikes: dict[int, tuple[int, int, float]], upcoders: set[int]) -> None:
        self.o = opts
        self.w = world
        self.rng = rng
        self.start = start
        self.end = end
        self.impossible = impossible  # (practitioner, day) → target patients
        self.impossible_p = {k: v / max(1.0, opts.people * 0.7) for k, v in impossible.items()}
        self.spikes = spikes  # polyclinic → (first day, last day, extra visits per person)
        self.upcoders = upcoders

    # -- helpers ---------------------------------------------------------------------------
    def _pract(self, org: int, spec: str) -> int:
        staff = self.w.orgs[org].staff
        lst = staff.get(spec) or staff.get("therapist") or next(iter(staff.values()))
        return lst[int(self.rng.random() * (len(lst)))]

    def _free_day(self, lo: int, hi: int, busy: set[int], weekday: bool = True) -> int | None:
        """A day in [lo, hi] not in ``busy`` (a weekday when asked), or None."""
        if hi < lo:
            return None
        rng = self.rng
        for _ in range(30):
            d = lo + int(rng.random() * (hi + 1 - lo))
            if d in busy or (weekday and d % 7 in (0, 6)):  # ordinal % 7: 0 Sunday, 6 Saturday
                continue
            return d
        return None

    def _hospital(self, p: Person) -> int:
        w = self.w
        if w.republican and self.rng.random() < 0.1:
            return w.republican[int(self.rng.random() * (len(w.republican)))]
        lst = w.hospitals_by_region[p.region] or w.hospitals
        return lst[int(self.rng.random() * (len(lst)))]

    def _pharmacy(self, p: Person) -> int:
        lst = self.w.pharmacies_by_region[p.region] or self.w.pharmacies
        return lst[int(self.rng.random() * (len(lst)))]

    def _case_group(self, p: Person, day: int) -> tuple[str, str, int] | None:
        age = p.age_on(day)
        ok = [g for g in CASE_GROUPS if (not g[5] or g[5] == p.sex) and g[6] <= age <= g[7]]
        if not ok:
            return None
        g = ok[int(self.rng.random() * (len(ok)))]
        return g[0], g[1], g[3]

    # -- the plan --------------------------------------------------------------------------
    def plan(self, p: Person, never_seen: bool) -> Care:
        o, rng = self.o, self.rng
        care = Care(never_seen=never_seen)
        if never_seen:
            return care
        first = max(p.birth, self.start)
        last = self.end if p.last_day is None else min(self.end, p.last_day - 1)
        if last < first:
            return care
        years = (last - first + 1) / 365.0
        factor = _age_factor(p.age_on(first))
        busy: set[int] = set()  # days with a stay (inclusive) or another service

        # stays
        n_stays = _poisson(rng, o.stays_per_year * years * factor)
        for _ in range(n_stays):
            los = 1 + min(int(rng.expovariate(1 / 5)), 20)
            admit = first + int(rng.random() * max(1, last - los + 1 - first))
            discharge = min(admit + los, last)
            if any(d in busy for d in range(admit - 1, discharge + 2)):
                continue
            self._add_stay(p, care, admit, discharge, busy)
        if p.death is not None and p.death > first + 3 and rng.random() < 0.4:
            # dying in hospital: the stay ends on the day of death
            los = 1 + int(rng.random() * 10)
            admit = max(first, p.death - los)
            if not any(d in busy for d in range(admit - 1, p.death + 1)):
                self._add_stay(p, care, admit, p.death, busy, died=True)

        # outpatient visits
        n_visits = _poisson(rng, o.visits_per_year * years * factor)
        if n_visits == 0 and last - first >= 30:
            n_visits = 1
        for _ in range(n_visits):
            day = self._free_day(first, last, busy)
            if day is not None:
                self._visit(p, care, day, busy)
        # screenings
        for code, prob in (("A02.001", 0.35), ("A02.003", 0.3), ("A02.002", 0.25)):
            t = TARIFF_BY_CODE[code]
            if t.sex == p.sex and rng.random() < prob:
                day = self._free_day(first, last, busy)
                if day is not None and t.min_age <= p.age_on(day) <= t.max_age:
                    self._visit(p, care, day, busy, code=code, icd="Z01.4" if p.sex == "F"
                                else "Z12.5")
        # emergency department visits
        for _ in range(_poisson(rng, o.ed_per_year * years)):
            day = self._free_day(first, last, busy, weekday=False)
            if day is not None:
                busy.add(day)
                h = self._hospital(p)
                icd = rng.choice(("S93.4", "T14.0", "R10.4", "S60.0", "J06.9"))
                care.eds.append(EdVisit(day, int(rng.random() * 1440), h,
                                        self._pract(h, "emergency"), icd))
        care.visits.sort(key=lambda v: v.day)
        care.stays.sort(key=lambda s: s.admit)
        return care

    def _add_stay(self, p: Person, care: Care, admit: int, discharge: int, busy: set[int],
                  died: bool = False, fraud: str = "") -> Stay | None:
        rng = self.rng
        g = self._case_group(p, admit)
        if g is None:
            return None
        icd_prefix, code, _ = g
        h = self._hospital(p) if not fraud else self._other_hospital(p, care)
        expensive = rng.random() < 0.08
        upcoded = False
        if not expensive and h in self.upcoders and rng.random() < 0.55:
            expensive = upcoded = True
        s = Stay(admit, 360 + int(rng.random() * 960), discharge,
                 480 + int(rng.random() * 600), h,
                 self._pract(h, "attending"), icd_prefix + (".9" if icd_prefix != "O80" else ".0"),
                 code + ("X" if expensive else ""), expensive, upcoded, died,
                 rng.random() < 0.5, fraud)
        if died:
            s.discharge_min = s.admit_min if discharge == admit else int(rng.random() * 1440)
        if discharge == admit and s.discharge_min <= s.admit_min:
            s.discharge_min = min(1439, s.admit_min + 120)
        if not fraud:
            for d in range(admit, discharge + 1):
                busy.add(d)
        care.stays.append(s)
        return s

    def _other_hospital(self, p: Person, care: Care) -> int:
        used = {s.hospital for s in care.stays}
        cands = [h for h in self.w.hospitals + self.w.republican if h not in used]
        return cands[int(self.rng.random() * (len(cands)))] if cands else self._hospital(p)

    def _visit(self, p: Person, care: Care, day: int, busy: set[int], code: str = "",
               icd: str = "", fraud: str = "", variant: str = "", pract: int = -1,
               poly: int = -1, extras: bool = True) -> Visit:
        rng = self.rng
        age = p.age_on(day)
        poly = p.poly if poly < 0 else poly
        drug = ""
        if not code:
            if p.chronic and rng.random() < 0.45:
                icd = p.chronic[int(rng.random() * (len(p.chronic)))]
                spec = CHRONIC_SPECIALITY.get(icd, "therapist") if age >= 18 else "pediatrician"
                drug = next(d[5] for d in DIAGNOSES if d[0] == icd) if rng.random() < 0.8 else ""
            elif p.sex == "F" and age >= 14 and rng.random() < 0.12:
                spec, icd = "gynecologist", "Z01.4"
            elif p.sex == "M" and age >= 14 and rng.random() < 0.04:
                spec, icd = "urologist", "N40" if age >= 50 else "Z00.0"
            else:
                spec = "therapist" if age >= 18 else "pediatrician"
                ok = [d for d in ACUTE if d[2] <= age <= d[3] and (not d[1] or d[1] == p.sex)]
                total = sum(d[6] for d in ok)
                r = rng.random() * total
                for d in ok:
                    r -= d[6]
                    if r <= 0:
                        break
                icd = d[0]
                drug = d[5] if d[5] and rng.random() < 0.7 else ""
            code = VISIT_CODE[spec]
        else:
            spec = SPEC_OF_CODE.get(code, "therapist")
        if pract < 0:
            pract = self._pract(poly, spec)
        v = Visit(day, 480 + int(rng.random() * 660), code, icd, poly, pract, fraud=fraud,
                  variant=variant)
        busy.add(day)
        if extras:
            self._extras(p, v, drug, busy)
        care.visits.append(v)
        return v

    def _extras(self, p: Person, v: Visit, drug: str, busy: set[int]) -> None:
        o, rng, fr = self.o, self.rng, self.o.fraud
        if rng.random() < o.lab_share:
            if v.icd.startswith("E11"):
                v.lab = "B03.003"
            elif v.icd.startswith("E78"):
                v.lab = "B03.004"
            else:
                v.lab = ("B03.001", "B03.002", "B03.005")[int(rng.random() * 3)]
            v.lab_org = self.w.labs[int(rng.random() * (len(self.w.labs)))]
            v.dup_across = rng.random() < fr.duplicate_billing_across
        if rng.random() < o.procedure_share:
            v.procedure = ("A03.001", "A03.002", "A03.003")[int(rng.random() * 3)]
            limit = TARIFF_BY_CODE[v.procedure].max_units_per_day
            v.units = 1 + int(rng.random() * limit)
            v.nurse = self._pract(v.poly, "nurse")
            if rng.random() < fr.excess_units:
                v.units = limit + 1 + int(rng.random() * 3)
                v.excess_units = True
        if drug:
            d = DRUG_BY_ATC[drug]
            v.drug = drug
            v.days = 30 if d.atc not in ("J01CA04",) else 7
            v.quantity = d.per_day * v.days
            last = self.end if p.last_day is None else min(self.end, p.last_day - 1)
            disp = v.day + int(rng.random() * 4)
            while disp > v.day and (disp in busy or disp > last):
                disp -= 1
            v.dispense_day = disp
            v.pharmacy = self._pharmacy(p)
            if rng.random() < fr.excess_dose:
                allowed = int(d.max_daily_mg * v.days / d.strength_mg + 1e-9)
                v.quantity = allowed * (2 + int(rng.random() * 2))
                v.excess_dose = True
        v.dup_within = rng.random() < fr.duplicate_billing_within

    # -- planted fraud touching one person ------------------------------------------------
    def plant(self, p: Person, care: Care) -> None:
        """Add the fabricated events of person-level schemes to ``care``."""
        rng, fr = self.rng, self.o.fraud
        if care.never_seen:
            return
        busy: set[int] = set()
        for s in care.stays:
            busy.update(range(s.admit, s.discharge + 1))
        busy.update(v.day for v in care.visits)
        busy.update(e.day for e in care.eds)
        first = max(p.birth, self.start)
        last = self.end if p.last_day is None else min(self.end, p.last_day - 1)

        # after_death: services billed after the person died
        if p.death is not None and p.death <= self.end - 7 and rng.random() < fr.after_death:
            hi = min(self.end, p.death + 120)
            drugs = [v.drug for v in care.visits if v.drug]
            for _ in range(1 + int(rng.random() * 3)):
                day = self._free_day(p.death + 1, hi, busy)
                if day is None:
                    continue
                if drugs and rng.random() < 0.3:
                    atc = drugs[int(rng.random() * (len(drugs)))]
                    d = DRUG_BY_ATC[atc]
                    busy.add(day)
                    care.dispenses.append(Dispense(day, atc, d.per_day * 30, 30,
                                                   self._pharmacy(p),
                                                   self._pract(p.poly, "therapist"),
                                                   "after_death"))
                else:
                    v = self._visit(p, care, day, busy, fraud="after_death", extras=False)
                    if rng.random() < 0.4:
                        v.lab = "B03.001"
                        v.lab_org = self.w.labs[int(rng.random() * (len(self.w.labs)))]

        # two_places: outpatient service inside a stay; a second, overlapping stay
        for s in list(care.stays):
            if s.fraud:
                continue
            if s.discharge - s.admit >= 2 and rng.random() < fr.two_places_outpatient:
                day = s.admit + 1 + int(rng.random() * (s.discharge - s.admit - 1))
                self._visit(p, care, day, set(), fraud="two_places", variant="outpatient_in_stay",
                            extras=False)
            if s.discharge - s.admit >= 2 and rng.random() < fr.two_places_overlap:
                admit = s.admit + 1 + int(rng.random() * (s.discharge - s.admit - 1))
                discharge = min(admit + 1 + int(rng.random() * 5), last if last >= admit else admit)
                nxt = [o.admit for o in care.stays if o.admit > s.admit and o is not s]
                if nxt:
                    discharge = min(discharge, min(nxt) - 2)
                if discharge >= admit:
                    self._add_stay(p, care, admit, discharge, busy, fraud="two_places")

        # sex_age_incompatible: a service not allowed for the person's sex or age
        if rng.random() < fr.sex_age_incompatible:
            day = self._free_day(first, last, busy)
            if day is not None:
                age = p.age_on(day)
                if rng.random() < 0.7:
                    code = ("A02.001", "A02.003")[int(rng.random() * 2)] if p.sex == "M" \
                        else "A02.002"
                    variant = "sex"
                else:
                    code = "A01.002" if age >= 18 else "A01.001"
                    variant = "age"
                self._visit(p, care, day, busy, code=code, icd="Z00.0",
                            fraud="sex_age_incompatible", variant=variant, extras=False)

        # impossible_day: this person is one of a practitioner's impossible day
        for (pract, day), prob in self.impossible_p.items():
            if first <= day <= last and day not in busy and p.age_on(day) >= 18 and \
                    rng.random() < prob:
                org = self.w.practitioners[pract].org
                self._visit(p, care, day, busy, code="A01.001", icd="J06.9",
                            fraud="impossible_day", pract=pract, poly=org, extras=False)

        # volume_spike: fabricated visits at the person's polyclinic in the spike month
        spike = self.spikes.get(p.poly)
        if spike is not None:
            lo, hi, lam = spike
            for _ in range(_poisson(rng, lam)):
                day = self._free_day(max(lo, first), min(hi, last), busy)
                if day is not None:
                    self._visit(p, care, day, busy, icd="J06.9", fraud="volume_spike",
                                extras=False)

        # no_indication, planted last: a drug dispensed with no indicating diagnosis among
        # all the person's visits, stays and emergencies (the fabricated ones included)
        if rng.random() < fr.no_indication:
            dx = {v.icd for v in care.visits} | {s.icd for s in care.stays} | \
                {e.icd for e in care.eds} | set(p.chronic)
            cands = [d for d in DRUGS if not any(x.startswith(d.indications) for x in dx)]
            day = self._free_day(first, last, busy)
            if cands and day is not None:
                d = cands[int(rng.random() * (len(cands)))]
                busy.add(day)
                care.dispenses.append(Dispense(day, d.atc, d.per_day * 30, 30, self._pharmacy(p),
                                               self._pract(p.poly, "therapist"), "no_indication"))
        care.visits.sort(key=lambda v: v.day)
        care.stays.sort(key=lambda s: s.admit)
