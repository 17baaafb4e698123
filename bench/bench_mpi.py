"""Benchmark of the master patient index: batch linking and real-time matching.

Workload (synthetic, generated here in-process so a million records need no feed files):
persons with Kazakh and Russian names (the synthetic nation's name pools), each seen by
1–3 source systems; each source record gets the nation's kinds of noise — script and
transliteration scheme (Cyrillic, Cyrillic without Kazakh letters, four Latin schemes),
patronymic style, typos, swapped day/month, missing / mistyped / someone else's IIN,
surname change on marriage, missing phone.

1. batch: ``usmis.mpi.batch.link_batch`` on N source records — block, compare, EM, cluster;
   wall time, peak RSS, pairwise precision/recall against the generator's truth.
   Target (issue 5): 1M records ≤ 5 min, ≤ 4 GB on 2 cores.
2. real time: P persons indexed in the database (links, sealed profiles, HMAC blocking
   keys, written in bulk the way ``usmis mpi relink`` writes them), then
   ``link_record`` for Q incoming records (half noisy copies of indexed persons, half new
   people), each in its own committed transaction; median and p95 latency.
   Target: p95 ≤ 20 ms with 1M persons indexed.

Usage: .venv/bin/python bench/bench_mpi.py [--records 1000000] [--persons 1000000]
       [--queries 1000] [--database-url URL] [--skip-batch] [--skip-realtime]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.pool import QueuePool

from usmis.config import Settings
from usmis.kit.db import make_engine, transaction, upgrade
from usmis.mpi import batch, evaluation, service
from usmis.mpi import repository as repo
from usmis.mpi.iin import iin_check_digit
from usmis.mpi.model import MatchRecord, make_record
from usmis.synth import names as sn

SCRIPTS = ["cyrillic", "cyrillic", "cyrillic_ru", "latin:icao", "latin:gost", "latin:simple",
           "latin:kz2021"]  # fmt: skip
CITIES = ["Астана", "Алматы", "Шымкент", "Қарағанды", "Ақтөбе", "Тараз", "Павлодар",
          "Өскемен", "Семей", "Атырау", "Қостанай", "Қызылорда", "Орал", "Петропавл"]  # fmt: skip


def make_iin(birth: date, sex: str, serial: int) -> str:
    marker = 1 + 2 * ((birth.year // 100) - 18) + (0 if sex == "M" else 1)
    while True:
        prefix = f"{birth:%y%m%d}{marker}{serial % 10000:04d}"
        check = iin_check_digit(prefix)
        if check is not None:
            return prefix + str(check)
        serial += 1


class Population:
    """Persons (truth) and their noisy source records."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.pools = sn.NamePools(seed)

    def person(self, n: int) -> dict[str, Any]:
        rng = self.rng
        sex = rng.choice("MF")
        kz = rng.random() < 0.7
        if kz:
            given = rng.choice(sn.KZ_MALE if sex == "M" else sn.KZ_FEMALE)
            father = rng.choice(sn.KZ_MALE)
            patr = sn.kz_patronymic(father, sex, "kz")
            surname = rng.choice(self.pools.kz_surnames)
        else:
            given = rng.choice([g[0] for g in sn.RU_MALE] if sex == "M" else sn.RU_FEMALE)
            father = rng.choice(sn.RU_MALE)
            patr = father[1] if sex == "M" else father[2]
            surname = rng.choice(self.pools.ru_surnames)
        if sex == "F":
            surname = sn.female_surname(surname)
        birth = date(1940, 1, 1) + timedelta(days=rng.randrange(365 * 80))
        return {
            "id": n, "sex": sex, "given": given, "surname": surname, "patronymic": patr,
            "father": father, "kz": kz, "birth": birth, "iin": make_iin(birth, sex, n),
            "phone": f"+7 7{rng.randrange(100):02d} {rng.randrange(10**7):07d}"
            if rng.random() < 0.85 else "",
            "city": rng.choice(CITIES), "street": rng.choice(self.pools.streets),
            "house": str(rng.randrange(1, 200)),
        }  # fmt: skip

    def record(self, p: dict[str, Any], key: str, other_iin: str) -> MatchRecord:
        rng = self.rng
        script = rng.choice(SCRIPTS)
        surname, given = p["surname"], p["given"]
        patr = p["patronymic"]
        if p["kz"]:
            style = rng.choice(["kz", "kz_ru", "ru"])
            father = p["father"] if isinstance(p["father"], str) else p["father"][0]
            patr = sn.kz_patronymic(father, p["sex"], style)
        if p["sex"] == "F" and rng.random() < 0.03:
            surname = sn.female_surname(rng.choice(self.pools.kz_surnames))  # married
        for field in ("surname", "given", "patr"):
            if rng.random() < 0.02:
                if field == "surname":
                    surname = sn.typo(surname, rng)
                elif field == "given":
                    given = sn.typo(given, rng)
                elif patr:
                    patr = sn.typo(patr, rng)

        def script_of(s: str) -> str:
            if script == "cyrillic_ru":
                return sn.russify(s)
            if script.startswith("latin:"):
                return sn.transliterate(s, script.split(":", 1)[1])
            return s

        birth: date = p["birth"]
        birth_text = birth.isoformat()
        if birth.day <= 12 and rng.random() < 0.01:
            birth_text = f"{birth.year:04d}-{birth.day:02d}-{birth.month:02d}"
        iin = p["iin"]
        r = rng.random()
        if r < 0.30:
            iin = ""
        elif r < 0.31:
            iin = iin[:5] + str((int(iin[5]) + 3) % 10) + iin[6:]
        elif r < 0.312:
            iin = other_iin
        latin = script.startswith("latin")
        return make_record(
            key,
            source_id=script,
            given=script_of(given),
            surname=script_of(surname),
            patronymic="" if latin and rng.random() < 0.5 else script_of(patr),
            birth_date=birth_text,
            sex=p["sex"],
            iin=iin,
            phone=p["phone"] if rng.random() < 0.8 else "",
            locality=script_of(p["city"]),
            street=f"{p['street']} {p['house']}" if rng.random() < 0.7 else "",
        )

    def records(self, n_records: int) -> tuple[list[MatchRecord], list[int]]:
        recs: list[MatchRecord] = []
        truth: list[int] = []
        pid = 0
        last_iin = "000000000000"
        while len(recs) < n_records:
            p = self.person(pid)
            for _ in range(self.rng.choice((1, 2, 2, 3))):
                recs.append(self.record(p, f"r{len(recs)}", last_iin))
                truth.append(pid)
                if len(recs) >= n_records:
                    break
            last_iin = p["iin"]
            pid += 1
        return recs, truth


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    cores = os.cpu_count()
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return f"{cores} cores, {mem_kb / 2**20:.1f} GiB RAM"


def bench_batch(n: int, seed: int) -> None:
    pop = Population(seed)
    t0 = time.perf_counter()
    recs, truth = pop.records(n)
    gen = time.perf_counter() - t0
    print(f"[batch] generated {len(recs):,} source records of {len(set(truth)):,} persons "
          f"in {gen:.1f}s")  # fmt: skip
    t0 = time.perf_counter()
    pairs = batch.candidate_pairs(recs)
    t_block = time.perf_counter() - t0
    gammas, det = batch.compare_pairs(recs, pairs)
    t_cmp = time.perf_counter() - t0 - t_block
    model = batch.train(recs, gammas)
    t_train = time.perf_counter() - t0 - t_block - t_cmp
    weights = batch.pair_weights(model, gammas, det)
    clustering = batch.cluster(recs, pairs, weights, model.thresholds)
    total = time.perf_counter() - t0
    fig = evaluation.score(clustering.labels, truth, review_tasks=len(clustering.review))
    print(
        f"[batch] {len(recs):,} records: {len(pairs):,} candidate pairs "
        f"({len(pairs) / len(recs):.1f} per record), {int(det.sum()):,} by IIN rule"
    )
    print(
        f"[batch] time: blocking {t_block:.1f}s, comparing {t_cmp:.1f}s, EM {t_train:.1f}s,"
        f" clustering {total - t_block - t_cmp - t_train:.1f}s; total {total:.1f}s "
        f"(target ≤ 300 s for 1M)"
    )
    print(f"[batch] peak RSS of the process {rss_mb():,.0f} MB (target ≤ 4096 MB for 1M)")
    print(f"[batch] precision {fig.precision:.5f} recall {fig.recall:.5f} "
          f"cluster-recall {fig.cluster_recall:.4f} "
          f"review share {fig.review_share:.4f}")  # fmt: skip


def bench_realtime(persons: int, queries: int, seed: int, url: str | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="usmis-bench-mpi-"))
    settings = Settings(data_dir=tmp, database_url=url or f"sqlite:///{tmp / 'usmis.db'}")
    upgrade(settings.resolved_database_url)
    # A long-lived pooled engine, as a server or ingest worker holds (NullPool closes the
    # last SQLite WAL connection after every transaction, which checkpoints: ~30 ms).
    engine = (
        make_engine(settings.resolved_database_url, poolclass=QueuePool)
        if settings.is_sqlite
        else make_engine(settings.resolved_database_url)
    )
    keys = service.keyring(settings)
    pop = Population(seed + 1)
    print(f"[realtime] database: {engine.dialect.name}; indexing {persons:,} persons …")
    t0 = time.perf_counter()
    people = []
    chunk = 20_000
    t_prep = t_db = 0.0
    now = service._now()
    for start in range(0, persons, chunk):
        tp = time.perf_counter()
        links, blocks, person_rows = [], [], []
        for n in range(start, min(persons, start + chunk)):
            p = pop.person(n)
            people.append(p) if n % 97 == 0 else None  # a sample to query later
            r = pop.record(p, f"P{n}", "000000000000")
            person_key = f"{n:032x}"
            person_rows.append(person_key)
            links.append({"patient_id": r.key, "person_key": person_key, "source_id": "bench",
                          "method": "new", "score": None, "actor": "bench", "updated_at": now,
                          **service.seal_profile(keys, r)})  # fmt: skip
            blocks.extend(
                {"key": k, "patient_id": r.key} for k in set(service.hashed_keys(keys, r))
            )
        td = time.perf_counter()
        t_prep += td - tp
        with transaction(engine) as conn:
            repo.insert_persons(conn, person_rows, now)
            repo.insert_links(conn, links)
            repo.insert_block_rows(conn, blocks)
        t_db += time.perf_counter() - td
    if engine.dialect.name == "postgresql":
        with engine.connect() as c:
            c.exec_driver_sql("ANALYZE")
    print(
        f"[realtime] indexed {persons:,} persons in {time.perf_counter() - t0:.0f}s "
        f"(generate+seal+HMAC {t_prep:.0f}s, database {t_db:.0f}s)"
    )
    lat: list[float] = []
    cpu: list[float] = []
    outcomes: dict[str, int] = {}
    rng = random.Random(seed)
    for q in range(queries):
        if q % 2 == 0 and people:
            rec = pop.record(rng.choice(people), f"Q{q}", "000000000000")
        else:
            rec = pop.record(pop.person(persons + q), f"Q{q}", "000000000000")
        t, c = time.perf_counter(), time.process_time()
        with transaction(engine) as conn:
            out = service.link_record(conn, settings, rec)
        lat.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
        outcomes[out.method] = outcomes.get(out.method, 0) + 1
    lat.sort()
    cpu.sort()
    p95 = lat[int(0.95 * (len(lat) - 1))]
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(
        f"[realtime] {queries} link_record calls (each its own committed transaction) with "
        f"{persons:,} persons indexed: median {statistics.median(lat):.2f} ms, "
        f"p95 {p95:.2f} ms, max {lat[-1]:.2f} ms (target p95 ≤ 20 ms); outcomes {outcomes}"
    )
    print(
        "[realtime] CPU time of this process per call (independent of other load): "
        f"median {statistics.median(cpu):.2f} ms, p95 {cpu[int(0.95 * (len(cpu) - 1))]:.2f} ms;"
        f" machine load average at the end {' '.join(load)}"
    )
    engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--skip-realtime", action="store_true")
    a = ap.parse_args()
    print(f"machine: {machine()}")
    if not a.skip_batch:
        bench_batch(a.records, a.seed)
    if not a.skip_realtime:
        bench_realtime(a.persons, a.queries, a.seed, a.database_url)


if __name__ == "__main__":
    main()
