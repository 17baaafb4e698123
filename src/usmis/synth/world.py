"""The world the people live in: IINs/BINs, persons, organizations, practitioners, plans.

Everything here is small and fixed before the people stream: organizations and staff
scale with N, but per-person state is never kept beyond the person being generated.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from usmis.mpi.iin import iin_check_digit
from usmis.synth.names import (
    KZ_FEMALE,
    KZ_MALE,
    RU_FEMALE,
    RU_MALE,
    NamePools,
    female_surname,
    kz_patronymic,
)
from usmis.synth.options import SynthOptions
from usmis.synth.reference import AGE_BANDS, CHRONIC_PREVALENCE, REGIONS, annual_mortality
from usmis.synth.sources import EHR_IDS, LAB_IDS, PHARMACY_IDS


class IdAllocator:
    """Unique IINs (and BINs) with valid check digits, without remembering issued numbers.

    Serials run per birth date from a random start, so two people never share an IIN and
    no set of issued numbers is kept (memory stays bounded by the number of dates).
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._next: dict[tuple[int, int], int] = {}

    def iin(self, birth: date, sex: str) -> str:
        century = birth.year // 100
        digit = {18: 1, 19: 3, 20: 5}[century] + (0 if sex == "M" else 1)
        key = (birth.toordinal(), digit)
        serial = self._next.get(key)
        if serial is None:
            serial = self._rng.randrange(0, 4000)
        while True:
            prefix = f"{birth:%y%m%d}{digit}{serial % 10000:04d}"
            serial += 1
            check = iin_check_digit(prefix)
            if check is not None:
                self._next[key] = serial
                return prefix + str(check)

    def bin(self, registered: date) -> str:
        """A BIN: YYMM of registration, 4 (resident legal entity), 0, serial, check digit."""
        key = (registered.year * 100 + registered.month, 40)
        serial = self._next.get(key, self._rng.randrange(0, 90000))
        while True:
            prefix = f"{registered:%y%m}40{serial % 100000:05d}"
            serial += 1
            check = iin_check_digit(prefix)
            if check is not None:
                self._next[key] = serial
                return prefix + str(check)


_YMD: dict[int, tuple[int, int, int]] = {}


def _ymd(day: int) -> tuple[int, int, int]:
    """(year, month, day) of an ordinal, cached: there are only ~45 000 distinct days."""
    t = _YMD.get(day)
    if t is None:
        d = date.fromordinal(day)
        t = _YMD[day] = (d.year, d.month, d.day)
    return t


@dataclass(slots=True)
class Person:
    idx: int
    person_id: str
    sex: str
    birth: int  # ordinal
    ethnicity: str  # kz | ru
    surname: str  # surname at the start of the period (or at birth)
    given: str
    patronymic: str
    iin: str
    region: int
    address: str
    phone: str
    poly: int  # index of the polyclinic the person is attached to
    death: int | None = None
    emigration: int | None = None
    born_in_period: bool = False
    married_on: int | None = None
    married_surname: str = ""
    chronic: list[str] = field(default_factory=list)

    def surname_on(self, day: int) -> str:
        if self.married_on is not None and day >= self.married_on:
            return self.married_surname
        return self.surname

    @property
    def current_surname(self) -> str:
        return self.married_surname if self.married_on is not None else self.surname

    @property
    def last_day(self) -> int | None:
        """Last day the person can receive care in the country (death or emigration)."""
        ends = [d for d in (self.death, self.emigration) if d is not None]
        return min(ends) if ends else None

    def age_on(self, day: int) -> int:
        b = _ymd(self.birth)
        d = _ymd(day)
        return d[0] - b[0] - ((d[1], d[2]) < (b[1], b[2]))


@dataclass(slots=True)
class Org:
    idx: int
    bin: str
    name: str
    kind: str  # polyclinic | hospital | lab | pharmacy
    region: int
    source: str  # the system it reports through
    republican: bool = False
    staff: dict[str, list[int]] = field(default_factory=dict)  # speciality → practitioners


@dataclass(slots=True)
class Practitioner:
    idx: int
    pid: str
    iin: str
    surname: str
    given: str
    patronymic: str
    speciality: str
    org: int
    licence: str
    licence_from: int
    licence_to: int | None = None
    employed_from: int = 0
    employed_to: int | None = None
    died_on: int | None = None


def period_end(opts: SynthOptions) -> date:
    y, m = divmod(opts.period_start.month - 1 + opts.months, 12)
    return date(opts.period_start.year + y, m + 1, 1) - timedelta(days=1)


def month_starts(opts: SynthOptions) -> list[int]:
    out = []
    for k in range(opts.months):
        y, m = divmod(opts.period_start.month - 1 + k, 12)
        out.append(date(opts.period_start.year + y, m + 1, 1).toordinal())
    return out


class PersonFactory:
    """Draws people one at a time: names, sex, age pyramid, IIN, address, life events."""

    def __init__(self, opts: SynthOptions, rng: random.Random, ids: IdAllocator,
                 pools: NamePools, polys_by_region: list[list[int]], all_polys: list[int]) -> None:
        self.opts = opts
        self.rng = rng
        self.ids = ids
        self.pools = pools
        self.start = opts.period_start.toordinal()
        self.end = period_end(opts).toordinal()
        self.region_cum = list(itertools.accumulate(r[2] for r in REGIONS))
        self.band_cum = list(itertools.accumulate(w for _, w in AGE_BANDS))
        self.polys_by_region = polys_by_region
        self.all_polys = all_polys

    def names(self, sex: str) -> tuple[str, str, str, str]:
        """(ethnicity, surname, given, patronymic) with real Kazakh / Russian forms."""
        rng = self.rng
        if rng.random() < 0.72:
            father = rng.choice(KZ_MALE)
            given = rng.choice(KZ_MALE if sex == "M" else KZ_FEMALE)
            r = rng.random()
            style = "ru" if r < 0.55 else "kz" if r < 0.85 else "kz_ru"
            patronymic = "" if rng.random() < 0.04 else kz_patronymic(father, sex, style)
            if rng.random() < 0.9:
                male = rng.choice(self.pools.kz_surnames)
            else:  # surname formed from the grandfather's name with -ұлы
                male = rng.choice(KZ_MALE) + "ұлы"
            surname = male if sex == "M" else female_surname(male)
            return "kz", surname, given, patronymic
        fname, p_son, p_daughter = rng.choice(RU_MALE)
        del fname
        given = rng.choice(RU_MALE)[0] if sex == "M" else rng.choice(RU_FEMALE)
        male = rng.choice(self.pools.ru_surnames)
        return "ru", male if sex == "M" else female_surname(male), given, \
            p_son if sex == "M" else p_daughter

    def phone(self) -> str:
        op = self.rng.choice(("701", "702", "705", "707", "708", "747", "771", "775", "776", "778"))
        return f"+7{op}{(1000000 + int(self.rng.random() * 8999999))}"

    def make(self, idx: int) -> Person:
        rng = self.rng
        opts = self.opts
        sex = "M" if rng.random() < 0.485 else "F"
        born_in_period = rng.random() < opts.births_share
        if born_in_period:
            birth = self.start + int(rng.random() * (self.end - 30 - self.start))
        else:
            band = bisect.bisect_right(self.band_cum, rng.random() * self.band_cum[-1])
            age = AGE_BANDS[min(band, len(AGE_BANDS) - 1)][0] + int(rng.random() * 5)
            birth = self.start - age * 365 - int(rng.random() * 365) - 1
        region = bisect.bisect_right(self.region_cum, rng.random() * self.region_cum[-1])
        region = min(region, len(REGIONS) - 1)
        eth, surname, given, patronymic = self.names(sex)
        street = rng.choice(self.pools.streets)
        address = f"{street}, {(1 + int(rng.random() * 179))}" + (
            f", кв. {(1 + int(rng.random() * 119))}" if rng.random() < 0.6 else "")
        bdate = date.fromordinal(birth)
        polys = self.polys_by_region[region] or self.all_polys
        p = Person(
            idx=idx, person_id=f"P{idx + 1:08d}", sex=sex, birth=birth, ethnicity=eth,
            surname=surname, given=given, patronymic=patronymic, iin=self.ids.iin(bdate, sex),
            region=region, address=address,
            phone="" if rng.random() < opts.noise.missing_phone else self.phone(),
            poly=polys[int(rng.random() * (len(polys)))], born_in_period=born_in_period,
        )
        # life events within the period
        first = max(birth, self.start)
        age0 = p.age_on(first)
        years = (self.end - first) / 365.0
        if rng.random() < 1 - (1 - annual_mortality(age0)) ** years:
            p.death = first + 1 + int(rng.random() * (self.end - first))
        elif rng.random() < opts.emigration_share:
            p.emigration = first + 1 + int(rng.random() * (self.end - first))
        if sex == "F" and 20 <= age0 <= 34 and rng.random() < opts.noise.marriage:
            day = first + 30 + int(rng.random() * max(1, self.end - 60 - first))
            if p.last_day is None or day < p.last_day:
                male = rng.choice(self.pools.kz_surnames if rng.random() < 0.7
                                  else self.pools.ru_surnames)
                new = female_surname(male)
                if new != surname:
                    p.married_on, p.married_surname = day, new
        group = 0 if age0 < 35 else 1 if age0 < 55 else 2
        for icd, prev in CHRONIC_PREVALENCE.items():
            if rng.random() < prev[group]:
                p.chronic.append(icd)
        return p


REGION_CITIES = [r[1] for r in REGIONS]


def _spread(n: int, weights: list[float]) -> list[int]:
    """Largest-remainder allocation of n items over regions (at least the biggest first)."""
    total = sum(weights)
    raw = [n * w / total for w in weights]
    alloc = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (alloc[i] - raw[i], i))
    for i in order[: n - sum(alloc)]:
        alloc[i] += 1
    return alloc


@dataclass
class World:
    orgs: list[Org]
    practitioners: list[Practitioner]
    polys: list[int]
    hospitals: list[int]
    labs: list[int]
    pharmacies: list[int]
    polys_by_region: list[list[int]]
    hospitals_by_region: list[list[int]]
    republican: list[int]
    pharmacies_by_region: list[list[int]]


def build_world(opts: SynthOptions, rng: random.Random, ids: IdAllocator,
                pools: NamePools) -> World:
    """Organizations with BINs and staff sized to the expected load."""
    weights = [r[2] for r in REGIONS]
    n = opts.people
    orgs: list[Org] = []
    start = opts.period_start

    def add(kind: str, region: int, source: str, name: str, republican: bool = False) -> int:
        reg = start - timedelta(days=(400 + int(rng.random() * 8600)))
        o = Org(len(orgs), ids.bin(reg), name, kind, region, source, republican)
        orgs.append(o)
        return o.idx

    # at least one polyclinic per EHR system; small nations get few, larger polyclinics so
    # that one planted impossible day does not look like a monthly volume spike as well
    n_poly = max(len(EHR_IDS), n // 5000)
    polys: list[int] = []
    polys_by_region: list[list[int]] = [[] for _ in REGIONS]
    k = 0
    for region, count in enumerate(_spread(n_poly, weights)):
        for j in range(count):
            src = EHR_IDS[k % len(EHR_IDS)]
            k += 1
            i = add("polyclinic", region, src,
                    f"Городская поликлиника №{j + 1}, {REGIONS[region][1]}")
            polys.append(i)
            polys_by_region[region].append(i)
    n_hosp = max(6, n // 40000)
    hospitals: list[int] = []
    hospitals_by_region: list[list[int]] = [[] for _ in REGIONS]
    for region, count in enumerate(_spread(n_hosp, weights)):
        for j in range(count):
            i = add("hospital", region, REGIONS[region][3],
                    f"Многопрофильная больница №{j + 1}, {REGIONS[region][1]}")
            hospitals.append(i)
            hospitals_by_region[region].append(i)
    # every regional hospital system has at least one hospital, however small the nation
    for his in dict.fromkeys(r[3] for r in REGIONS):
        if not any(orgs[h].source == his for h in hospitals):
            region = max((i for i, r in enumerate(REGIONS) if r[3] == his),
                         key=lambda i: REGIONS[i][2])
            i = add("hospital", region, his, f"Многопрофильная больница №1, {REGIONS[region][1]}")
            hospitals.append(i)
            hospitals_by_region[region].append(i)
    republican = [add("hospital", 1, "his_republic", f"Национальный научный центр №{j + 1}",
                      True) for j in range(max(1, n_hosp // 6))]
    labs = [add("lab", 0, sid, f"Лаборатория {sid.split('_')[1].upper()}") for sid in LAB_IDS]
    n_ph = max(4, n // 20000)
    pharmacies: list[int] = []
    pharmacies_by_region: list[list[int]] = [[] for _ in REGIONS]
    k = 0
    for region, count in enumerate(_spread(n_ph, weights)):
        for j in range(count):
            src = PHARMACY_IDS[k % len(PHARMACY_IDS)]
            k += 1
            i = add("pharmacy", region, src, f"Аптека №{j + 1}, {REGIONS[region][1]}")
            pharmacies.append(i)
            pharmacies_by_region[region].append(i)

    practitioners: list[Practitioner] = []
    pf = PersonFactory(opts, rng, ids, pools, polys_by_region, polys)
    lic_seq = itertools.count(100001)
    s0 = start.toordinal()

    def staff(org: int, spec: str, count: int) -> None:
        for _ in range(count):
            sex = "F" if rng.random() < 0.7 else "M"
            _, surname, given, patronymic = pf.names(sex)
            birth = date.fromordinal(s0 - (26 * 365 + int(rng.random() * 38 * 365)))
            pr = Practitioner(
                idx=len(practitioners), pid=f"PR{len(practitioners) + 1:06d}",
                iin=ids.iin(birth, sex), surname=surname, given=given, patronymic=patronymic,
                speciality=spec, org=org, licence=f"KZ{next(lic_seq):08d}",
                licence_from=s0 - (400 + int(rng.random() * 6600)),
                employed_from=s0 - (30 + int(rng.random() * 4970)),
            )
            practitioners.append(pr)
            orgs[org].staff.setdefault(spec, []).append(pr.idx)

    # Staff sized so a practitioner sees about 5 patients a working day on average, far
    # below the norm of 24, so that only planted days look impossible.
    per_poly = n / n_poly
    daily = per_poly * opts.visits_per_year * 1.15 / 250
    shares = {"therapist": 0.48, "pediatrician": 0.22, "gynecologist": 0.12, "urologist": 0.04,
              "cardiologist": 0.09, "endocrinologist": 0.07, "nurse": 0.12}
    for o in polys:
        for spec, share in shares.items():
            staff(o, spec, max(1, math.ceil(daily * share / 5)))
    per_hosp = n / n_hosp
    for o in hospitals + republican:
        stays = per_hosp * opts.stays_per_year
        staff(o, "attending", max(2, math.ceil(stays / 250)))
        staff(o, "emergency", max(1, math.ceil(per_hosp * opts.ed_per_year / 250 / 5)))
    for o in labs:
        staff(o, "lab_physician", 2)
    return World(orgs, practitioners, polys, hospitals, labs, pharmacies, polys_by_region,
                 hospitals_by_region, republican, pharmacies_by_region)
