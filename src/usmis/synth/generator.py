"""``generate()``: stream a synthetic nation, person by person, into feeds and ground truth.

Memory stays bounded: a person's views, care and claim keys live only while that person
is written; what is kept across people is per organization, per practitioner or per
planted provider-level fraud instance.  One seeded ``random.Random`` drives everything in
a fixed order, so the same arguments give byte-identical output.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from usmis.synth import fhirres, hl7msg
from usmis.synth.care import CarePlanner, Dispense, EdVisit, Stay, Visit
from usmis.synth.fraud import Accumulator, FraudLedger, Item
from usmis.synth.names import NamePools
from usmis.synth.options import SynthOptions, build_options
from usmis.synth.reference import (
    DAY_PATIENT_NORM,
    DRUG_BY_ATC,
    DRUGS,
    LAB_PANELS,
    REGIONS,
    TARIFF_BY_CODE,
    TARIFFS,
)
from usmis.synth.sources import EHR_IDS, FUND_IDS, SOURCE_BY_ID, SOURCES, Source
from usmis.synth.views import View, make_view, respell, script_of
from usmis.synth.world import (
    IdAllocator,
    Person,
    PersonFactory,
    build_world,
    month_starts,
    period_end,
)
from usmis.synth.writers import FeedWriter, GroundTruthCsv

GENERATOR = "usmis-synth/1"
Progress = Callable[[int, int], None]

LOCAL_ID = {
    "his_astana": "AST{:07d}", "his_almaty": "{:08d}", "his_shymkent": "SH-{:06d}",
    "his_aktobe": "W{:07d}", "his_karaganda": "KRG{:07d}", "his_republic": "NRC-{:07d}",
    "lab_invivo": "INV{:08d}", "lab_olymp": "OL{:07d}", "lab_kdl": "KDL-{:07d}",
    "ehr_damumed": "dm-{:07d}", "ehr_medelement": "me{:08d}", "ehr_kmis": "kmis/{:07d}",
    "ehr_tamos": "tm{:07d}", "pharm_europharma": "EP{:08d}", "pharm_biosfera": "BS-{:07d}",
    "pharm_sadykhan": "{:09d}", "pharm_zdravplus": "ZP{:07d}", "reg_population": "{:09d}",
    "reg_births": "B{:07d}", "reg_deaths": "D{:07d}", "reg_migration": "EM{:07d}",
    "reg_attachment": "R{:08d}", "fund": "FZ{:09d}",
}
COUNTRIES = ("RU", "DE", "UZ", "KG", "TR", "US", "KR")
NO_DUPLICATES = {"reg_population", "reg_births", "reg_deaths", "reg_migration",
                 "reg_attachment", "fund"}


@dataclass
class SynthSummary:
    out: Path
    people: int
    seed: int
    sources: int
    records: dict[str, int]
    malformed: int
    fraud_instances: dict[str, int]
    fraud_amounts: dict[str, float]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Ctx:
    """What is kept while one person is written (dropped afterwards)."""

    p: Person
    views: dict[str, View] = field(default_factory=dict)
    claim_keys: set[tuple[str, int]] = field(default_factory=set)
    after_death: list[Item] = field(default_factory=list)
    fund_sources: set[str] = field(default_factory=set)


def generate(out: Path, people: int, seed: int, progress: Progress | None = None,
             **options: Any) -> SynthSummary:
    """Write a nation of ``people`` persons into ``out`` (created; must be empty or absent).

    ``options`` override fields of :class:`SynthOptions` (``noise=`` / ``fraud=`` take
    dicts of rates).  ``progress(done, total)`` is called every few hundred people.
    """
    opts = build_options(people, seed, **options)
    return _Nation(Path(out), opts).run(progress)


class _Nation:
    def __init__(self, out: Path, opts: SynthOptions) -> None:
        self.out = out
        self.o = opts
        self.rng = random.Random(opts.seed)
        self.start = opts.period_start.toordinal()
        self.end = period_end(opts).toordinal()
        self.months = month_starts(opts)

    # -- set-up --------------------------------------------------------------------------------
    def _setup(self) -> None:
        out, o, rng = self.out, self.o, self.rng
        out.mkdir(parents=True, exist_ok=True)
        if any(out.iterdir()):
            raise FileExistsError("output folder is not empty")
        gt = out / "ground_truth"
        gt.mkdir()
        self.pools = NamePools(o.seed)
        self.ids = IdAllocator(rng)
        self.world = build_world(o, rng, self.ids, self.pools)
        self.factory = PersonFactory(o, rng, self.ids, self.pools, self.world.polys_by_region,
                                     self.world.polys)
        self.malformed = GroundTruthCsv(gt / "malformed.csv",
                                        ["source_id", "file", "index", "control_id", "reason"])
        self.writers: dict[str, FeedWriter] = {}
        for i, s in enumerate(SOURCES):
            w_rng = random.Random(o.seed * 1000 + i)
            self.writers[s.id] = FeedWriter(out, s, w_rng, o.noise.malformed, self._on_malformed,
                                            o.messages_per_file)
        self.people_csv = GroundTruthCsv(gt / "people.csv", [
            "person_id", "iin", "surname", "given_name", "patronymic", "previous_surname",
            "surname_changed_on", "sex", "birth_date", "ethnicity", "region", "city", "address",
            "phone", "attached_bin", "death_date", "emigration_date", "born_in_period"])
        self.records_csv = GroundTruthCsv(gt / "source_records.csv", [
            "source_id", "local_id", "person_id", "iin_status", "iin_owner_person_id",
            "name_script", "name_noise", "duplicate_of"])
        self.noise_csv = GroundTruthCsv(gt / "noise.csv",
                                        ["source_id", "kind", "locator", "detail"])
        self.ledger = FraudLedger(gt)
        self.local_seq: dict[str, itertools.count[int]] = {
            k: itertools.count(1) for k in LOCAL_ID}
        self.seq: Counter[str] = Counter()
        self.recent_iins: deque[tuple[str, str]] = deque(maxlen=500)
        self.capitation: Counter[tuple[int, int]] = Counter()
        self.fmt_cache: dict[tuple[str, int], str] = {}
        self.patient_records: Counter[str] = Counter()
        self._doctors: dict[tuple[int, str], tuple[str, str, str]] = {}
        self._plan_fraud()

    def _on_malformed(self, sid: str, file: str, index: int, control: str, reason: str) -> None:
        self.malformed.write([sid, file, index, control, reason])

    def _plan_fraud(self) -> None:
        o, rng, w = self.o, self.rng, self.world
        fr = o.fraud
        therapists = [i for pl in w.polys for i in w.orgs[pl].staff.get("therapist", [])]
        self.impossible: dict[tuple[int, int], int] = {}
        if fr.impossible_day > 0:
            for pr in rng.sample(therapists, max(1, round(fr.impossible_day * len(therapists)))):
                day = self.start + 30 + int(rng.random() * (self.end - self.start - 60))
                while day % 7 in (0, 6):
                    day += 1
                # 3-6 x the norm, but at most half a polyclinic's usual monthly visits, so
                # the day never doubles as a volume spike of its polyclinic
                monthly = o.people / len(w.polys) * o.visits_per_year / 12
                hi = max(3 * DAY_PATIENT_NORM, min(6 * DAY_PATIENT_NORM, int(monthly / 2)))
                self.impossible[(pr, day)] = rng.randint(3 * DAY_PATIENT_NORM, hi)
        self.impossible_acc = {k: Accumulator(self.ledger.reserve()) for k in self.impossible}
        busy_polys = {w.practitioners[pr].org for pr, _ in self.impossible}
        clinical = [i for pl in w.polys for spec, lst in w.orgs[pl].staff.items()
                    if spec != "nurse" for i in lst if i not in {p for p, _ in self.impossible}]
        self.ineligible: dict[int, tuple[str, int]] = {}
        if fr.ineligible_practitioner > 0:
            chosen = rng.sample(clinical, max(1, round(fr.ineligible_practitioner * len(clinical))))
            for k, pr in enumerate(chosen):
                variant = ("licence_expired", "deceased", "not_employed")[k % 3]
                day = self.start + 120 + int(rng.random() * (max(1, self.end - self.start - 240)))
                prac = w.practitioners[pr]
                if variant == "licence_expired":
                    prac.licence_to = day
                elif variant == "deceased":
                    prac.died_on = day
                else:
                    prac.employed_to = day
                self.ineligible[pr] = (variant, day)
        self.ineligible_acc = {k: Accumulator(self.ledger.reserve()) for k in self.ineligible}
        self.spikes: dict[int, tuple[int, int, float]] = {}
        self.spike_month: dict[int, int] = {}
        if fr.volume_spike > 0:
            cands = [pl for pl in w.polys if pl not in busy_polys] or list(w.polys)
            for pl in rng.sample(cands, max(1, round(fr.volume_spike * len(w.polys)))):
                k = o.months // 2 + int(rng.random() * (max(1, o.months - o.months // 2)))
                lo = self.months[k]
                hi = self.months[k + 1] - 1 if k + 1 < len(self.months) else self.end
                mult = 4.0 + rng.random() * 2
                self.spikes[pl] = (lo, hi, (mult - 1) * o.visits_per_year / 12 * 1.1)
                self.spike_month[pl] = k
        self.spike_acc = {self.world.orgs[pl].bin: Accumulator(self.ledger.reserve())
                          for pl in sorted(self.spikes)}
        self.upcoders: set[int] = set()
        if fr.upcoding > 0:
            self.upcoders = set(rng.sample(w.hospitals, max(1, round(fr.upcoding *
                                                                     len(w.hospitals)))))
        self.upcoding_acc = {self.world.orgs[h].bin: Accumulator(self.ledger.reserve())
                             for h in sorted(self.upcoders)}
        self.planner = CarePlanner(o, w, rng, self.start, self.end, self.impossible, self.spikes,
                                   self.upcoders)

    # -- small helpers -------------------------------------------------------------------------
    def d(self, src: Source, day: int | None) -> str:
        if day is None:
            return ""
        key = (src.date_format, day)
        s = self.fmt_cache.get(key)
        if s is None:
            s = date.fromordinal(day).strftime(src.date_format)
            if len(self.fmt_cache) < 200_000:
                self.fmt_cache[key] = s
        return s

    def money(self, src: Source, amount: float) -> Any:
        if src.format == "ndjson":
            return round(amount, 2)
        s = f"{amount:.2f}"
        return s.replace(".", ",") if src.decimal_comma else s

    def num(self, src: Source, value: float) -> Any:
        if src.format == "ndjson":
            return value
        s = str(value)
        return s.replace(".", ",") if src.decimal_comma else s

    def sex(self, src: Source, sex: str) -> str:
        return src.sex_codes[0] if sex == "M" else src.sex_codes[1]

    def next_id(self, kind: str, fmt: str) -> str:
        self.seq[kind] += 1
        return fmt.format(self.seq[kind])

    def noise(self, sid: str, kind: str, locator: str, detail: str = "") -> None:
        self.noise_csv.write([sid, kind, locator, detail])

    def view(self, ctx: _Ctx, sid: str, day: int) -> View:
        v = ctx.views.get(sid)
        if v is not None:
            return v
        p = ctx.p
        key = "fund" if sid in FUND_IDS else sid
        src = SOURCE_BY_ID[sid]
        local = LOCAL_ID[key].format(next(self.local_seq[key]))
        other = None
        if self.recent_iins:
            other = self.recent_iins[int(self.rng.random() * (len(self.recent_iins)))]
        v = make_view(p, src, local, day, self.rng, self.o.noise, other)
        v.address = script_of(p.address, src) if src.script.startswith("latin") else p.address
        v.city = script_of(REGIONS[p.region][1], src)
        v.region = script_of(REGIONS[p.region][0], src)
        v.phone = p.phone
        if key not in NO_DUPLICATES and self.rng.random() < self.o.noise.duplicate_patient:
            v.dup_id = LOCAL_ID[key].format(next(self.local_seq[key]))
        if key == "fund":
            for f in FUND_IDS:  # the fund has one id per insured person in all its extracts
                ctx.views[f] = v
        else:
            ctx.views[sid] = v
        return v

    def doctor(self, pract: int, src: Source) -> tuple[str, str, str]:
        """(id, surname, given) of a practitioner as this source spells them (cached)."""
        key = (pract, src.id)
        d = self._doctors.get(key)
        if d is None:
            pr = self.world.practitioners[pract]
            d = self._doctors[key] = (pr.pid, script_of(pr.surname, src),
                                      script_of(pr.given, src))
        return d

    def pid_of(self, v: View) -> str:
        """The local id a record carries: a duplicate registration half of the time."""
        if v.dup_id and v.used and self.rng.random() < 0.5:
            return v.dup_id
        v.used = True
        return v.local_id

    # -- the run -------------------------------------------------------------------------------
    def run(self, progress: Progress | None) -> SynthSummary:
        t0 = time.perf_counter()
        self._setup()
        self._reference_registries()
        n = self.o.people
        step = max(1, min(1000, n // 100))
        for i in range(n):
            self._person(i)
            if progress is not None and (i + 1) % step == 0:
                progress(i + 1, n)
        if progress is not None:
            progress(n, n)
        self._finish()
        secs = time.perf_counter() - t0
        summary = SynthSummary(
            out=self.out, people=n, seed=self.o.seed, sources=len(SOURCES),
            records={sid: sum(w.counts.values()) for sid, w in self.writers.items()},
            malformed=self.malformed.rows, fraud_instances=dict(self.ledger.counts),
            fraud_amounts={k: round(v, 2) for k, v in self.ledger.amounts.items()},
            seconds=round(secs, 2),
        )
        (self.out / "ground_truth" / "summary.json").write_bytes(orjson.dumps({
            "generator": GENERATOR, "options": self.o.as_dict(),
            "people": n, "records": summary.records, "malformed": summary.malformed,
            "fraud_instances": summary.fraud_instances, "fraud_amounts": summary.fraud_amounts,
        }, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        return summary

    # -- registries that do not depend on people -----------------------------------------------
    def _reference_registries(self) -> None:
        w = self.world
        fac = self.writers["reg_facilities"]
        for org in w.orgs:
            fac.row({"org_bin": org.bin, "name": org.name, "org_kind": org.kind,
                     "region": REGIONS[org.region][0], "city": REGIONS[org.region][1],
                     "via": org.source}, may_break=False)
        tar = self.writers["reg_tariffs"]
        for t in TARIFFS:
            tar.row({"code": t.code, "name": t.name, "category": t.category,
                     "price": str(t.price), "minutes": str(t.minutes), "allowed_sex": t.sex,
                     "min_age": str(t.min_age), "max_age": str(t.max_age),
                     "max_units": str(t.max_units_per_day), "expensive": "1" if t.expensive
                     else "0"}, may_break=False)
        ind = self.writers["reg_drug_indications"]
        doses = self.writers["reg_drug_doses"]
        src = doses.source
        for dr in DRUGS:
            for icd in dr.indications:
                ind.row({"atc": dr.atc, "icd10": icd}, may_break=False)
            doses.row({"atc": dr.atc, "name": dr.name, "form": dr.form,
                       "strength": self.num(src, dr.strength_mg),
                       "max_daily": self.num(src, dr.max_daily_mg),
                       "unit_price": self.money(src, dr.unit_price)}, may_break=False)
        reg = self.writers["reg_practitioners"]
        rs = reg.source
        for pr in w.practitioners:
            reg.row({
                "practitioner_id": pr.pid, "iin": pr.iin, "surname": pr.surname,
                "given": pr.given, "patronymic": pr.patronymic, "speciality": pr.speciality,
                "licence": pr.licence, "licence_from": self.d(rs, pr.licence_from),
                "licence_to": self.d(rs, pr.licence_to), "org_bin": w.orgs[pr.org].bin,
                "from_date": self.d(rs, pr.employed_from),
                "to_date": self.d(rs, pr.employed_to),
                "status": "deceased" if pr.died_on is not None else "active",
                "status_date": self.d(rs, pr.died_on),
            }, may_break=False)

    # -- one person ----------------------------------------------------------------------------
    def _person(self, i: int) -> None:
        o, rng = self.o, self.rng
        fr = o.fraud
        p = self.factory.make(i)
        ctx = _Ctx(p)
        resident_all = (not p.born_in_period and p.death is None and p.emigration is None
                        and p.age_on(self.start) >= 18)
        never_seen = resident_all and rng.random() < fr.phantom_attachment_never_seen
        care = self.planner.plan(p, never_seen)
        self.planner.plant(p, care)
        phantom = "never_seen" if never_seen else ""
        if p.death is not None and rng.random() < fr.phantom_attachment_dead:
            phantom = "dead"
        elif p.emigration is not None and rng.random() < fr.phantom_attachment_emigrated:
            phantom = "emigrated"
        self._registries(ctx, phantom)
        events: list[tuple[int, int, Any]] = []
        events.extend((s.admit, 0, s) for s in care.stays)
        events.extend((v.day, 1, v) for v in care.visits)
        events.extend((e.day, 2, e) for e in care.eds)
        events.extend((x.day, 3, x) for x in care.dispenses)
        events.sort(key=lambda e: (e[0], e[1]))
        for _, _, ev in events:
            if isinstance(ev, Stay):
                self._stay(ctx, ev)
            elif isinstance(ev, Visit):
                self._visit(ctx, ev)
            elif isinstance(ev, EdVisit):
                self._ed(ctx, ev)
            elif isinstance(ev, Dispense):
                self._dispense(ctx, ev.day, ev.drug, ev.quantity, ev.days, ev.pharmacy,
                               ev.prescriber, "", "", ev.fraud)
        self._merges(ctx)
        self._close_person(ctx)

    def _registries(self, ctx: _Ctx, phantom: str) -> None:
        p, w = ctx.p, self.world
        first = max(p.birth, self.start)
        wr = self.writers["reg_population"]
        s = wr.source
        v = self.view(ctx, "reg_population", first)
        prev = p.surname if p.married_on is not None else ""
        wr.row({"patient_id": v.local_id, "iin": p.iin, "surname": p.current_surname,
                "previous_surname": prev, "surname_date": self.d(s, p.married_on),
                "given": p.given, "patronymic": p.patronymic, "birth_date": self.d(s, p.birth),
                "sex": self.sex(s, p.sex), "region": REGIONS[p.region][0],
                "city": REGIONS[p.region][1], "address": p.address, "phone": p.phone,
                "citizenship": "KZ"}, late=self._late("reg_population", v.local_id))
        if p.born_in_period:
            wr = self.writers["reg_births"]
            s = wr.source
            v = self.view(ctx, "reg_births", p.birth)
            wr.row({"patient_id": v.local_id, "iin": v.iin, "surname": v.surname,
                    "given": v.given, "patronymic": v.patronymic, "birth_date": self.d(s, p.birth),
                    "sex": self.sex(s, p.sex), "region": REGIONS[p.region][0],
                    "event_date": self.d(s, min(self.end,
                                                p.birth + 1 + int(self.rng.random() * 20)))},
                   late=self._late("reg_births", v.local_id))
        if p.death is not None:
            wr = self.writers["reg_deaths"]
            s = wr.source
            v = self.view(ctx, "reg_deaths", p.death)
            causes = ("I21.9", "I63.9", "C34.9", "J44.1", "I25.1", "C16.9")
            cause = causes[int(self.rng.random() * len(causes))]
            wr.row({"patient_id": v.local_id, "iin": v.iin, "surname": v.surname,
                    "given": v.given, "patronymic": v.patronymic, "birth_date": self.d(s, v.birth),
                    "sex": self.sex(s, p.sex), "death_date": self.d(s, p.death), "icd10": cause},
                   late=self._late("reg_deaths", v.local_id))
        if p.emigration is not None:
            wr = self.writers["reg_migration"]
            s = wr.source
            v = self.view(ctx, "reg_migration", p.emigration)
            wr.row({"patient_id": v.local_id, "iin": v.iin, "surname": v.surname,
                    "given": v.given, "birth_date": self.d(s, v.birth), "sex": self.sex(s, p.sex),
                    "event_date": self.d(s, p.emigration),
                    "country": COUNTRIES[int(self.rng.random() * len(COUNTRIES))]},
                   late=self._late("reg_migration", v.local_id))
        # attachment to the polyclinic: the basis of capitation
        wr = self.writers["reg_attachment"]
        s = wr.source
        v = self.view(ctx, "reg_attachment", first)
        attach_from = p.birth + 1 + int(self.rng.random() * 19) if p.born_in_period else \
            self.start - 30 - int(self.rng.random() * 3000)
        attach_from = max(attach_from, p.birth)
        to, reason = None, ""
        if p.death is not None and phantom != "dead":
            to, reason = p.death, "death"
        elif p.emigration is not None and phantom != "emigrated":
            to, reason = p.emigration, "emigration"
        attach_id = self.next_id("attach", "A{:09d}")
        org = w.orgs[p.poly]
        fio = " ".join(x for x in (p.current_surname, p.given, p.patronymic) if x)
        wr.row({"attach_id": attach_id, "patient_id": v.local_id, "iin": p.iin, "fio": fio,
                "birth_date": self.d(s, p.birth), "sex": self.sex(s, p.sex), "org_bin": org.bin,
                "from_date": self.d(s, attach_from), "to_date": self.d(s, to), "reason": reason},
               late=self._late("reg_attachment", attach_id))
        months = 0
        ref_day = {"dead": p.death, "emigrated": p.emigration}.get(phantom)
        for k, m0 in enumerate(self.months):
            if attach_from <= m0 and (to is None or to >= m0):
                self.capitation[(p.poly, k)] += 1
                if phantom == "never_seen" or (ref_day is not None and m0 > ref_day):
                    months += 1
        if phantom and months:
            rate = TARIFF_BY_CODE["CAP01"].price
            self.ledger.record(
                "phantom_attachment", phantom, org.bin, "", p.person_id,
                date.fromordinal(max(attach_from, self.start)).isoformat(), "",
                months * rate, [("reg_attachment", "attachment", attach_id, months * rate)],
                f"{months} person-months x {rate}")

    def _late(self, sid: str, locator: str) -> bool:
        if self.rng.random() < self.o.noise.late:
            self.noise(sid, "late", locator)
            return True
        return False

    # -- claims --------------------------------------------------------------------------------
    def claim(self, ctx: _Ctx, fund: str, provider_bin: str, pract: int, code: str, day: int,
              units: int, amount: float, src_system: str, src_record_id: str,
              extra: dict[str, Any] | None = None) -> str:
        """Bill one service to the fund; account it for the centrally-kept schemes."""
        p = ctx.p
        wr = self.writers[fund]
        s = wr.source
        v = self.view(ctx, fund, day)
        ctx.fund_sources.add(fund)
        self.seq["claim"] += 1
        cid = f"C{self.seq['claim']:010d}"
        pract_id = self.world.practitioners[pract].pid if pract >= 0 else ""
        values: dict[str, Any] = {
            "claim_id": cid, "provider_bin": provider_bin, "practitioner_id": pract_id,
            "patient_id": v.local_id, "iin": v.iin, "service_code": code,
            "service_date": self.d(s, day),
            "units": units if s.format == "ndjson" else str(units),
            "amount": self.money(s, amount), "src_system": src_system,
            "src_record_id": src_record_id,
            "submitted_date": self.d(s, day + 3 + int(self.rng.random() * 40)),
        }
        if extra:
            values.update(extra)
        wr.row(values, late=self._late(fund, cid))
        ctx.claim_keys.add((code, day))
        item: Item = (fund, "claim", cid, amount)
        if p.death is not None and day > p.death:
            ctx.after_death.append(item)
        if fund == "fund_claims_outpatient":
            k = self._month_index(day)
            if k is not None:
                self.ledger.monthly[(provider_bin, k)] += amount
            t = TARIFF_BY_CODE[code]
            acc = self.impossible_acc.get((pract, day))
            if acc is not None and t.category in ("visit", "screening", "procedure"):
                acc.amount += amount
                self.ledger.item(acc, "impossible_day", item)
                acc.patients.add(v.local_id)
                acc.minutes += t.minutes * units
            inel = self.ineligible.get(pract)
            if inel is not None and day > inel[1]:
                acc2 = self.ineligible_acc[pract]
                acc2.amount += amount
                self.ledger.item(acc2, "ineligible_practitioner", item)
        return cid

    def _month_index(self, day: int) -> int | None:
        if day < self.start or day > self.end:
            return None
        return bisect.bisect_right(self.months, day) - 1

    def _instance(self, ctx: _Ctx, scheme: str, variant: str, provider_bin: str, pract: int,
                  day: int, items: list[Item], amount: float | None = None,
                  detail: str = "") -> None:
        amt = sum(x[3] for x in items) if amount is None else amount
        pid = self.world.practitioners[pract].pid if pract >= 0 else ""
        iso = date.fromordinal(day).isoformat()
        self.ledger.record(scheme, variant, provider_bin, pid, ctx.p.person_id, iso, iso, amt,
                           items, detail)

    # -- hospital stays (HL7 ADT + ORU) --------------------------------------------------------
    def _hl7(self, wr: FeedWriter, segs: list[str], cid: str, kind: str, day: int) -> None:
        late = self._late(wr.source.id, cid)
        wr.message(segs, cid, kind, late=late)
        if self.rng.random() < self.o.noise.resent:
            wr.resend_message(segs, kind)
            self.noise(wr.source.id, "resent", cid)

    def _pid_segment(self, ctx: _Ctx, v: View, src: Source, day: int) -> str:
        p = ctx.p
        if p.married_on is not None and v.surname_day < p.married_on <= day:
            respell(v, p, src, day)
            v.updates.append("married_surname")
        local = self.pid_of(v)
        if local == v.local_id:
            return hl7msg.pid(v, v.address, v.city, v.region, v.phone)
        saved = v.local_id
        v.local_id = local
        seg = hl7msg.pid(v, v.address, v.city, v.region, v.phone)
        v.local_id = saved
        return seg

    def _stay(self, ctx: _Ctx, s: Stay) -> None:
        w = self.world
        org = w.orgs[s.hospital]
        sid = org.source
        wr = self.writers[sid]
        src = wr.source
        v = self.view(ctx, sid, s.admit)
        pr = w.practitioners[s.pract]
        doctor = self.doctor(pr.idx, src)
        visit_no = self.next_id(sid + ":visit", sid[4:7].upper() + "V{:08d}")
        admit = hl7msg.dtm(s.admit, s.admit_min)
        disch = hl7msg.dtm(s.discharge, s.discharge_min)
        ward = ("THER", "CARD", "NEUR", "SURG", "OBST", "PULM")[int(self.rng.random() * 6)]
        cid = self.next_id(sid + ":msg", sid[4:7].upper() + "{:010d}")
        segs = [hl7msg.msh(sid, org.bin, admit, "ADT^A01^ADT_A01", cid), hl7msg.evn("A01", admit),
                self._pid_segment(ctx, v, src, s.admit),
                hl7msg.pv1("I", org.bin, ward, doctor, visit_no, admit),
                hl7msg.dg1(1, s.icd, admit, "A")]
        self._hl7(wr, segs, cid, "ADT^A01", s.admit)
        if self.rng.random() < self.o.noise.update and s.discharge > s.admit:
            v.phone = self.factory.phone()
            cid = self.next_id(sid + ":msg", sid[4:7].upper() + "{:010d}")
            when = hl7msg.dtm(s.admit + 1, 600)
            segs = [hl7msg.msh(sid, org.bin, when, "ADT^A08^ADT_A01", cid),
                    hl7msg.evn("A08", when), self._pid_segment(ctx, v, src, s.admit + 1),
                    hl7msg.pv1("I", org.bin, ward, doctor, visit_no, admit)]
            self._hl7(wr, segs, cid, "ADT^A08", s.admit + 1)
            self.noise(sid, "update", cid, "phone changed")
        if s.labs:
            day = min(s.admit + 1, s.discharge)
            self._oru(ctx, wr, v, org.bin, "I", visit_no, f"{visit_no}-L1", day, 420, 600,
                      doctor, self._panel_for(s.icd))
        disposition = "20" if s.died else "01"
        cid = self.next_id(sid + ":msg", sid[4:7].upper() + "{:010d}")
        segs = [hl7msg.msh(sid, org.bin, disch, "ADT^A03^ADT_A03", cid), hl7msg.evn("A03", disch),
                self._pid_segment(ctx, v, src, s.discharge),
                hl7msg.pv1("I", org.bin, ward, doctor, visit_no, admit, disch, disposition),
                hl7msg.dg1(1, s.icd, disch, "F")]
        self._hl7(wr, segs, cid, "ADT^A03", s.discharge)
        t = TARIFF_BY_CODE[s.code]
        fs = SOURCE_BY_ID["fund_claims_inpatient"]
        claim = self.claim(ctx, "fund_claims_inpatient", org.bin, s.pract, s.code, s.admit, 1,
                           t.price, sid, visit_no,
                           {"icd10": s.icd, "discharge_date": self.d(fs, s.discharge)})
        self.ledger.inpatient_claim(org.bin, t.price, t.expensive)
        if s.upcoded:
            base = TARIFF_BY_CODE[s.code[:-1]].price
            self.ledger.item(self.upcoding_acc[org.bin], "upcoding",
                             ("fund_claims_inpatient", "claim", claim, float(t.price - base)))
        if s.fraud == "two_places":
            self._instance(ctx, "two_places", "overlapping_stays", org.bin, s.pract, s.admit,
                           [("fund_claims_inpatient", "claim", claim, float(t.price))])

    def _panel_for(self, icd: str) -> str:
        if icd.startswith("E11"):
            return "B03.003"
        return ("B03.001", "B03.002", "B03.005")[int(self.rng.random() * 3)]

    def _oru(self, ctx: _Ctx, wr: FeedWriter, v: View, org_bin: str, pclass: str,
             visit_no: str, placer: str, day: int, minute: int, result_minute: int,
             doctor: tuple[str, str, str], panel_code: str, report_day: int | None = None) -> str:
        sid = wr.source.id
        src = wr.source
        panel, panel_name, tests = LAB_PANELS[panel_code]
        filler = self.next_id(sid + ":order", sid[4:7].upper() + "-{:09d}")
        collected = hl7msg.dtm(day, minute)
        rday = day if report_day is None else report_day
        reported = hl7msg.dtm(rday, result_minute)
        cid = self.next_id(sid + ":msg", sid[4:7].upper() + "{:010d}")
        segs = [hl7msg.msh(sid, org_bin, reported, "ORU^R01^ORU_R01", cid),
                self._pid_segment(ctx, v, src, day),
                hl7msg.pv1(pclass, org_bin, "LAB", doctor, visit_no, collected),
                hl7msg.orc(placer, filler),
                hl7msg.obr(placer, filler, panel, panel_name, collected, doctor, reported)]
        p = ctx.p
        diabetic = any(c.startswith("E11") for c in p.chronic)
        rng = self.rng
        for n, (loinc, name, unit, low, high, dec) in enumerate(tests, 1):
            lo, hi = low, high
            if diabetic and loinc in ("4548-4", "2345-7"):
                lo, hi = high, high * 1.6
            val = rng.uniform(lo * 0.93, hi * 1.05) if rng.random() < 0.12 else rng.uniform(lo, hi)
            flag = "H" if val > high else "L" if val < low else "N"
            value = f"{val:.{dec}f}"
            segs.append(hl7msg.obx(n, loinc, name, value, unit, f"{low:g}", f"{high:g}", flag,
                                   reported))
        self._hl7(wr, segs, cid, "ORU^R01", rday)
        return filler

    def _ed(self, ctx: _Ctx, e: EdVisit) -> None:
        w = self.world
        org = w.orgs[e.hospital]
        sid = org.source
        wr = self.writers[sid]
        src = wr.source
        v = self.view(ctx, sid, e.day)
        pr = w.practitioners[e.pract]
        doctor = self.doctor(pr.idx, src)
        visit_no = self.next_id(sid + ":visit", sid[4:7].upper() + "V{:08d}")
        when = hl7msg.dtm(e.day, e.minute)
        cid = self.next_id(sid + ":msg", sid[4:7].upper() + "{:010d}")
        segs = [hl7msg.msh(sid, org.bin, when, "ADT^A04^ADT_A01", cid), hl7msg.evn("A04", when),
                self._pid_segment(ctx, v, src, e.day),
                hl7msg.pv1("E", org.bin, "ED", doctor, visit_no, when),
                hl7msg.dg1(1, e.icd, when, "W")]
        self._hl7(wr, segs, cid, "ADT^A04", e.day)
        t = TARIFF_BY_CODE["A04.001"]
        self.claim(ctx, "fund_claims_outpatient", org.bin, e.pract, t.code, e.day, 1, t.price,
                   sid, visit_no)

    def _merges(self, ctx: _Ctx) -> None:
        """HL7 systems merge some of their duplicate registrations (ADT^A40)."""
        for sid, v in list(ctx.views.items()):
            src = SOURCE_BY_ID[sid]
            if not v.dup_id or src.format != "hl7v2" or src.kind != "hospital":
                continue
            if self.rng.random() >= self.o.noise.merge:
                continue
            wr = self.writers[sid]
            org_bin = next(o.bin for o in self.world.orgs if o.source == sid)
            when = hl7msg.dtm(self.end, 1380)
            cid = self.next_id(sid + ":msg", sid[4:7].upper() + "{:010d}")
            segs = [hl7msg.msh(sid, org_bin, when, "ADT^A40^ADT_A39", cid),
                    hl7msg.evn("A40", when),
                    hl7msg.pid(v, v.address, v.city, v.region, v.phone),
                    hl7msg.mrg(v.dup_id, sid)]
            self._hl7(wr, segs, cid, "ADT^A40", self.end)
            self.noise(sid, "merge", cid, f"{v.dup_id} merged into {v.local_id}")

    # -- outpatient visits (FHIR bundles) ------------------------------------------------------
    def _visit(self, ctx: _Ctx, vis: Visit) -> None:
        w, rng, p = self.world, self.rng, ctx.p
        org = w.orgs[vis.poly]
        sid = org.source
        wr = self.writers[sid]
        src = wr.source
        v = self.view(ctx, sid, vis.day)
        if p.married_on is not None and v.surname_day < p.married_on <= vis.day:
            respell(v, p, src, vis.day)
            v.updates.append("married_surname")
            self.noise(sid, "update", v.local_id, "surname changed after marriage")
        if rng.random() < self.o.noise.update * 0.3:
            v.phone = self.factory.phone()
            self.noise(sid, "update", v.local_id, "phone changed")
        self.seq[sid + ":bundle"] += 1
        b = fhirres.BundleBuilder(sid, src.extra["bundle_type"], EHR_IDS.index(sid) + 1,
                                  self.seq[sid + ":bundle"])
        local = self.pid_of(v)
        saved = v.local_id
        v.local_id = local
        subject = b.add(fhirres.patient(v, v.address, v.city, v.region, v.phone), "patient",
                        local)
        v.local_id = saved
        enc_id = self.next_id(sid + ":enc", "E{:09d}")
        start = fhirres.iso_dt(vis.day, vis.minute)
        end = fhirres.iso_dt(vis.day, min(1439, vis.minute + 20))
        pract = w.practitioners[vis.pract]
        enc = b.add(fhirres.encounter(sid, enc_id, subject, vis.code, pract.pid, org.bin, start,
                                      end), "encounter", enc_id)
        cond_id = self.next_id(sid + ":cond", "C{:09d}")
        b.add(fhirres.condition(sid, cond_id, subject, enc, vis.icd, start), "condition", cond_id)
        if p.age_on(vis.day) >= 18 and rng.random() < 0.4:
            oid = self.next_id(sid + ":obs", "O{:09d}")
            b.add(fhirres.observation(sid, oid, subject, enc, "29463-7", "Body weight",
                                      round(rng.uniform(50, 110), 1), "kg", start),
                  "observation", oid)
        if vis.procedure:
            prid = self.next_id(sid + ":proc", "PR{:09d}")
            b.add(fhirres.procedure(sid, prid, subject, enc, vis.procedure,
                                    w.practitioners[vis.nurse].pid, end), "procedure", prid)
        rx_id = ""
        if vis.drug:
            dr = DRUG_BY_ATC[vis.drug]
            rx_id = self.next_id(sid + ":rx", "RX{:09d}")
            b.add(fhirres.medication_request(sid, rx_id, subject, enc, dr.atc, dr.name, dr.form,
                                             dr.per_day, vis.quantity, vis.days, vis.icd,
                                             pract.pid, start), "prescription", rx_id)
        bundle = b.build(end)
        wr.bundle(bundle, b.kinds, late=self._late(sid, b.id))
        if rng.random() < self.o.noise.resent:
            wr.resend_bundle(bundle)
            self.noise(sid, "resent", b.id)

        # claims
        t = TARIFF_BY_CODE[vis.code]
        claim = self.claim(ctx, "fund_claims_outpatient", org.bin, vis.pract, vis.code, vis.day, 1,
                           t.price, sid, enc_id)
        own: list[Item] = [("fund_claims_outpatient", "claim", claim, float(t.price))]
        if vis.fraud in ("two_places", "sex_age_incompatible"):
            self._instance(ctx, vis.fraud, vis.variant or "", org.bin, vis.pract, vis.day, own)
        elif vis.fraud == "volume_spike":
            self.ledger.item(self.spike_acc[org.bin], "volume_spike", own[0])
        if vis.dup_within and not vis.fraud:
            dup = self.claim(ctx, "fund_claims_outpatient", org.bin, vis.pract, vis.code, vis.day,
                             1, t.price, sid, enc_id)
            self._instance(ctx, "duplicate_billing", "within_system", org.bin, vis.pract, vis.day,
                           [("fund_claims_outpatient", "claim", dup, float(t.price))],
                           detail=f"duplicate of {claim}")
        if vis.procedure:
            tp = TARIFF_BY_CODE[vis.procedure]
            pc = self.claim(ctx, "fund_claims_outpatient", org.bin, vis.nurse, vis.procedure,
                            vis.day, vis.units, tp.price * vis.units, sid, enc_id)
            if vis.excess_units:
                excess = vis.units - tp.max_units_per_day
                self._instance(ctx, "excess_units", "units_per_day", org.bin, vis.nurse, vis.day,
                               [("fund_claims_outpatient", "claim", pc,
                                 float(tp.price * vis.units))], amount=float(tp.price * excess),
                               detail=f"{vis.units} units, limit {tp.max_units_per_day}")
        if vis.lab:
            self._lab(ctx, vis, org.bin, enc_id, pract, sid)
        if vis.drug and vis.dispense_day:
            self._dispense(ctx, vis.dispense_day, vis.drug, vis.quantity, vis.days, vis.pharmacy,
                           vis.pract, sid, rx_id, "excess_dose" if vis.excess_dose else "")

    def _lab(self, ctx: _Ctx, vis: Visit, poly_bin: str, enc_id: str, pract: Any,
             ehr_sid: str) -> None:
        w = self.world
        lab = w.orgs[vis.lab_org]
        sid = lab.source
        wr = self.writers[sid]
        src = wr.source
        v = self.view(ctx, sid, vis.day)
        doctor = self.doctor(pract.idx, src)
        last = self.end if ctx.p.last_day is None else min(self.end, ctx.p.last_day - 1)
        if ctx.p.death is not None and vis.day > ctx.p.death:
            last = self.end  # a fabricated test after death is reported like any other
        report_day = min(vis.day + int(self.rng.random() * 3), max(vis.day, last))
        filler = self._oru(ctx, wr, v, lab.bin, "O", enc_id, f"{enc_id}-L", vis.day, vis.minute,
                           600, doctor, vis.lab, report_day)
        t = TARIFF_BY_CODE[vis.lab]
        lab_pract = w.orgs[vis.lab_org].staff["lab_physician"][0]
        self.claim(ctx, "fund_claims_outpatient", lab.bin, lab_pract, vis.lab, vis.day, 1, t.price,
                   sid, filler)
        if vis.dup_across and not vis.fraud:
            dup = self.claim(ctx, "fund_claims_outpatient", poly_bin, vis.pract, vis.lab, vis.day,
                             1, t.price, ehr_sid, enc_id)
            self._instance(ctx, "duplicate_billing", "across_systems", poly_bin, vis.pract,
                           vis.day, [("fund_claims_outpatient", "claim", dup, float(t.price))],
                           detail=f"also billed by {lab.bin} via {sid} order {filler}")

    # -- pharmacies ----------------------------------------------------------------------------
    def _dispense(self, ctx: _Ctx, day: int, atc: str, quantity: int, days: int, pharmacy: int,
                  prescriber: int, rx_source: str, rx_id: str, fraud: str) -> None:
        if (atc, day) in ctx.claim_keys:
            return  # the same drug on the same day is never dispensed twice in the background
        w, p = self.world, ctx.p
        org = w.orgs[pharmacy]
        sid = org.source
        wr = self.writers[sid]
        src = wr.source
        v = self.view(ctx, sid, day)
        dr = DRUG_BY_ATC[atc]
        disp_id = self.next_id(sid + ":disp", "{:010d}")
        local = self.pid_of(v)
        amount = float(dr.unit_price * quantity)
        values: dict[str, Any] = {
            "dispense_id": disp_id, "pharmacy_bin": org.bin, "patient_id": local, "iin": v.iin,
            "surname": v.surname, "given": v.given, "patronymic": v.patronymic,
            "fio": " ".join(x for x in (v.surname, v.given, v.patronymic) if x),
            "birth_date": self.d(src, v.birth), "sex": self.sex(src, p.sex),
            "rx_source": rx_source, "rx_id": rx_id,
            "prescriber": w.practitioners[prescriber].pid if prescriber >= 0 else "",
            "atc": atc, "drug_name": dr.name,
            "quantity": quantity if src.format == "ndjson" else str(quantity),
            "days_supply": days if src.format == "ndjson" else str(days),
            "dispense_date": self.d(src, day), "unit_price": self.money(src, dr.unit_price),
            "amount": self.money(src, amount), "status": "dispensed",
        }
        wr.row(values, late=self._late(sid, disp_id))
        if self.rng.random() < self.o.noise.update * 0.2:
            wr.row({**values, "status": "corrected"}, late=True)
            self.noise(sid, "update", disp_id, "correction row with the same id")
        fs = SOURCE_BY_ID["fund_claims_drugs"]
        claim = self.claim(ctx, "fund_claims_drugs", org.bin, prescriber, atc, day, quantity,
                           amount, sid, disp_id,
                           {"days_supply": days if fs.format == "ndjson" else str(days)})
        item: Item = ("fund_claims_drugs", "claim", claim, amount)
        if fraud == "no_indication":
            self._instance(ctx, "no_indication", "", org.bin, prescriber, day, [item])
        elif fraud == "excess_dose":
            allowed = int(dr.max_daily_mg * days / dr.strength_mg + 1e-9)
            self._instance(ctx, "excess_units", "dose", org.bin, prescriber, day, [item],
                           amount=float(dr.unit_price * (quantity - allowed)),
                           detail=f"quantity {quantity}, allowed {allowed}")

    # -- end of a person -----------------------------------------------------------------------
    def _close_person(self, ctx: _Ctx) -> None:
        p = ctx.p
        if ctx.after_death:
            first = min(ctx.after_death, key=lambda x: x[2])
            del first
            self.ledger.record("after_death", "", "", "", p.person_id,
                               date.fromordinal(p.death or self.end).isoformat(), "",
                               sum(x[3] for x in ctx.after_death), ctx.after_death)
        seen: set[int] = set()
        for sid, v in ctx.views.items():
            if sid in FUND_IDS and sid not in ctx.fund_sources:
                continue
            src = SOURCE_BY_ID[sid]
            noise = ";".join(v.name_noise + v.updates)
            self.records_csv.write([sid, v.local_id, p.person_id, v.iin_status, v.iin_owner,
                                    src.script, noise, ""])
            self.patient_records[sid] += 1
            if v.dup_id and id(v) not in seen:
                self.records_csv.write([sid, v.dup_id, p.person_id, v.iin_status, v.iin_owner,
                                        src.script, noise, v.local_id])
                self.patient_records[sid] += 1
            seen.add(id(v))
        org = self.world.orgs[p.poly]
        self.people_csv.write([
            p.person_id, p.iin, p.current_surname, p.given, p.patronymic,
            p.surname if p.married_on is not None else "",
            date.fromordinal(p.married_on).isoformat() if p.married_on else "", p.sex,
            date.fromordinal(p.birth).isoformat(), p.ethnicity, REGIONS[p.region][0],
            REGIONS[p.region][1], p.address, p.phone, org.bin,
            date.fromordinal(p.death).isoformat() if p.death else "",
            date.fromordinal(p.emigration).isoformat() if p.emigration else "",
            "1" if p.born_in_period else "0"])
        self.recent_iins.append((p.iin, p.person_id))

    # -- the end -------------------------------------------------------------------------------
    def _finish(self) -> None:
        w, led = self.world, self.ledger
        # capitation payments
        cap = self.writers["fund_capitation"]
        rate = TARIFF_BY_CODE["CAP01"].price
        for pl in w.polys:
            for k, m0 in enumerate(self.months):
                n = self.capitation.get((pl, k), 0)
                cap.row({"payment_id": self.next_id("cap", "CP{:08d}"),
                         "provider_bin": w.orgs[pl].bin,
                         "month": date.fromordinal(m0).strftime("%Y-%m"), "count": str(n),
                         "price": f"{rate:.2f}", "amount": f"{n * rate:.2f}"}, may_break=False)
        # impossible days
        for (pr, day), acc in self.impossible_acc.items():
            prac = w.practitioners[pr]
            iso = date.fromordinal(day).isoformat()
            if acc.n_items:
                led.finish(acc, "impossible_day", "", w.orgs[prac.org].bin, prac.pid, iso, iso,
                           acc.amount, f"{len(acc.patients)} patients, {acc.minutes} standard "
                           "minutes")
        # ineligible practitioners
        for pr, acc in self.ineligible_acc.items():
            prac = w.practitioners[pr]
            variant, day = self.ineligible[pr]
            if acc.n_items:
                led.finish(acc, "ineligible_practitioner", variant, w.orgs[prac.org].bin,
                           prac.pid, date.fromordinal(day + 1).isoformat(),
                           date.fromordinal(self.end).isoformat(), acc.amount)
        # upcoding
        median = led.upcoding_median_share()
        for h in sorted(self.upcoders):
            b = w.orgs[h].bin
            n_all, n_exp, s_exp = led.inpatient.get(b, [0.0, 0.0, 0.0])
            acc = self.upcoding_acc[b]
            if not n_exp or not acc.n_items:
                continue
            amount = max(0.0, s_exp - n_all * median * (s_exp / n_exp))
            led.finish(acc, "upcoding", "", b, "", date.fromordinal(self.start).isoformat(),
                       date.fromordinal(self.end).isoformat(), amount,
                       f"{int(n_exp)}/{int(n_all)} expensive, peer median share {median:.4f}")
        # volume spikes
        for pl in sorted(self.spikes):
            b = w.orgs[pl].bin
            k = self.spike_month[pl]
            totals = [led.monthly.get((b, j), 0.0) for j in range(self.o.months)]
            others = sorted(totals[:k] + totals[k + 1:])
            mid = len(others) // 2
            median = others[mid] if len(others) % 2 else (others[mid - 1] + others[mid]) / 2
            amount = totals[k] - median
            month0 = date.fromordinal(self.months[k])
            acc = self.spike_acc[b]
            if acc.n_items:
                led.finish(acc, "volume_spike", "", b, "", month0.isoformat(),
                           date.fromordinal(self.spikes[pl][1]).isoformat(), amount,
                           f"month total {totals[k]:.2f}, median of other months {median:.2f}")
        for wr in self.writers.values():
            wr.close()
        for f in (self.malformed, self.people_csv, self.records_csv, self.noise_csv):
            f.close()
        led.close()
        self._write_counts()
        self._write_descriptions()

    def _write_counts(self) -> None:
        path = self.out / "ground_truth" / "counts.csv"
        with path.open("w", encoding="utf-8", newline="") as f:
            wcsv = csv.writer(f, lineterminator="\n")
            wcsv.writerow(["source_id", "kind", "well_formed", "malformed", "exact_resends"])
            for s in SOURCES:
                wr = self.writers[s.id]
                kinds = sorted(set(wr.counts) | set(wr.malformed_counts) | set(wr.resent))
                for k in kinds:
                    wcsv.writerow([s.id, k, wr.counts.get(k, 0), wr.malformed_counts.get(k, 0),
                                   wr.resent.get(k, 0)])
                if self.patient_records.get(s.id):
                    # patient records (local ids) of this source, duplicates counted apart
                    wcsv.writerow([s.id, "patient_ids", self.patient_records[s.id], 0, 0])

    def _write_descriptions(self) -> None:
        sources = [s.describe(self.writers[s.id].files) for s in SOURCES]
        (self.out / "sources.json").write_bytes(
            orjson.dumps(sources, option=orjson.OPT_INDENT_2))
        (self.out / "nation.json").write_bytes(orjson.dumps({
            "generator": GENERATOR, "people": self.o.people, "seed": self.o.seed,
            "period_start": date.fromordinal(self.start).isoformat(),
            "period_end": date.fromordinal(self.end).isoformat(),
            "timezone": "+05:00", "sources": len(SOURCES),
        }, option=orjson.OPT_INDENT_2))
