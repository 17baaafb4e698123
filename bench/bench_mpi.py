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
2. real time: P persons (1–3 source records each) indexed in a fresh database (persons,
   links with sealed profiles, HMAC blocking keys — the rows ``usmis mpi relink`` writes —
   generated in ``--workers`` processes and bulk-loaded: COPY on PostgreSQL, executemany
   on SQLite, secondary indexes built once at the end), then ``link_record`` for Q
   incoming records (half noisy copies of indexed persons, half new people), each in its
   own committed transaction; median and p95 latency, CPU per call, decisions.
   Target: p95 ≤ 20 ms with 1M persons indexed.
3. ``--nation DIR`` (instead of 1 and 2): real-time linking *quality* — every source
   record of a ``usmis synth`` nation through ``link_record``, scored against its truth.

Usage: .venv/bin/python bench/bench_mpi.py [--records 1000000] [--persons 1000000]
       [--queries 1000] [--database-url postgresql+psycopg://…] [--workers 2]
       [--skip-batch] [--skip-realtime] [--nation DIR [--nation-model default]]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, make_url, select
from sqlalchemy.pool import NullPool, QueuePool, StaticPool

from usmis.config import Settings
from usmis.kit.crypto import keyring_for
from usmis.kit.db import insert_rows, make_engine, transaction, upgrade
from usmis.mpi import batch, evaluation, service, tables
from usmis.mpi import repository as repo
from usmis.mpi.iin import iin_check_digit
from usmis.mpi.model import MatchRecord, make_record
from usmis.synth import names as sn

SCRIPTS = ["cyrillic", "cyrillic", "cyrillic_ru", "latin:icao", "latin:gost", "latin:simple",
           "latin:kz2021"]  # fmt: skip
SERIALS_PER_STREAM = 100  # IIN serials per birth date and sex reserved for one stream
RECORDS_PER_PERSON = (1, 2, 2, 3)  # source systems that know a person
CITIES = ["Астана", "Алматы", "Шымкент", "Қарағанды", "Ақтөбе", "Тараз", "Павлодар",
          "Өскемен", "Семей", "Атырау", "Қостанай", "Қызылорда", "Орал", "Петропавл"]  # fmt: skip


def make_iin(birth: date, sex: str, serial: int) -> str | None:
    """The IIN with this serial, or None if the serial gives no check digit (never issued)."""
    marker = 1 + 2 * ((birth.year // 100) - 18) + (0 if sex == "M" else 1)
    prefix = f"{birth:%y%m%d}{marker}{serial % 10000:04d}"
    check = iin_check_digit(prefix)
    return None if check is None else prefix + str(check)


class Population:
    """Persons (truth) and their noisy source records.

    ``stream``: several populations of one seed share the name pools but draw different
    persons, and their IINs never collide (each stream has its own block of serials per
    birth date and sex), so chunks can be generated in parallel processes.
    """

    def __init__(self, seed: int, stream: int = 0) -> None:
        self.rng = random.Random(seed * 1_000_003 + stream)
        self.pools = sn.NamePools(seed)
        self.serial_base = stream * SERIALS_PER_STREAM
        self.serials: dict[tuple[date, str], int] = {}

    def iin(self, birth: date, sex: str) -> str:
        # Unique (a counter per birth date and sex, a block of it per stream), and spread
        # over the serials by a fixed odd step from a start hashed from the date, so two
        # people born the same day do not get IINs one digit apart and a mistyped day
        # rarely gives someone else's IIN.  (The nation allocates serials consecutively;
        # see docs/mpi.md on what that does to the "IIN one typo" level.)
        start = zlib.crc32(f"{birth}{sex}".encode())
        while True:
            used = self.serials.get((birth, sex), 0)
            self.serials[(birth, sex)] = used + 1
            iin = make_iin(birth, sex, (start + (self.serial_base + used) * 6577) % 10000)
            if iin is not None:
                return iin

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
            "father": father, "kz": kz, "birth": birth, "iin": self.iin(birth, sex),
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
            for _ in range(self.rng.choice(RECORDS_PER_PERSON)):
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


def _index_chunk(job: tuple[str, int, int, int, int]) -> dict[str, list[Any]]:
    """Rows for persons ``start``..``stop``: what ``usmis mpi relink`` writes for them
    (person, one link with a sealed profile per source record, HMAC blocking keys)."""
    key_file, seed, stream, start, stop = job
    keys = keyring_for(Path(key_file))
    pop = Population(seed, stream)
    now = service._now()
    out: dict[str, list[Any]] = {"persons": [], "links": [], "blocks": [], "sample": []}
    other_iin = "000000000000"
    for n in range(start, stop):
        p = pop.person(n)
        person_key = f"{n:032x}"
        out["persons"].append({"person_key": person_key, "status": "active", "created_at": now})
        for j in range(pop.rng.choice(RECORDS_PER_PERSON)):
            r = pop.record(p, f"P{n}.{j}", other_iin)
            out["links"].append(
                {"patient_id": r.key, "person_key": person_key, "source_id": r.source_id,
                 "method": "relink", "score": None, "actor": "bench", "updated_at": now,
                 **service.seal_profile(keys, r)}
            )  # fmt: skip
            out["blocks"].extend(
                {"key": k, "patient_id": r.key} for k in sorted(set(service.hashed_keys(keys, r)))
            )
        other_iin = p["iin"]
        if n % SAMPLE_EVERY == 0:
            out["sample"].append(p)  # persons to send noisy copies of later
    return out


SAMPLE_EVERY = 97


def index_persons(
    settings: Settings, persons: int, seed: int, workers: int
) -> list[dict[str, Any]]:
    """Bulk-load ``persons`` persons (generated, sealed and HMAC'd in ``workers``
    processes; COPY on PostgreSQL, executemany on SQLite); return a sample of them.

    As any bulk load does, the secondary indexes of the blocking keys and links are
    dropped during the load and built once at the end (the same definitions)."""
    chunk = max(50_000, -(-persons // 90))  # ≤ 90 streams of IIN serials (+1 for queries)
    jobs = [
        (str(settings.resolved_key_file), seed, 1 + i, start, min(persons, start + chunk))
        for i, start in enumerate(range(0, persons, chunk))
    ]
    sqlite = settings.is_sqlite
    if sqlite:  # one connection for the load, its B-trees kept in memory
        engine = make_engine(settings.resolved_database_url, poolclass=StaticPool)
        with engine.connect() as c:
            c.exec_driver_sql("PRAGMA cache_size=-2000000")
    else:
        engine = make_engine(settings.resolved_database_url)
    secondary = [*tables.block.indexes, *tables.link.indexes]
    with transaction(engine) as conn:
        for ix in secondary:
            ix.drop(conn)
    sample: list[dict[str, Any]] = []
    counts = {"links": 0, "blocks": 0}
    t0 = time.perf_counter()
    t_db = 0.0
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) if workers > 1 else _Inline() as pool:
        for part in pool.imap(_index_chunk, jobs):
            td = time.perf_counter()
            with transaction(engine) as conn:
                insert_rows(conn, tables.person, part["persons"])
                insert_rows(conn, tables.link, part["links"])
                insert_rows(conn, tables.block, part["blocks"])
            t_db += time.perf_counter() - td
            counts["links"] += len(part["links"])
            counts["blocks"] += len(part["blocks"])
            sample.extend(part["sample"])
            done = int(part["persons"][-1]["person_key"], 16) + 1
            print(f"  … {done:,} persons, {time.perf_counter() - t0:.0f}s", flush=True)
    td = time.perf_counter()
    with transaction(engine) as conn:
        for ix in secondary:
            ix.create(conn)
    if sqlite:
        with transaction(engine) as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        # What autovacuum does after a bulk load: statistics, and the visibility map that
        # lets the blocking-key lookup be an index-only scan.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            for name in ("mpi_person", "mpi_link", "mpi_block"):
                c.exec_driver_sql(f"VACUUM ANALYZE {name}")
    engine.dispose()
    t_db += time.perf_counter() - td
    print(
        f"[realtime] indexed {persons:,} persons ({counts['links']:,} source records, "
        f"{counts['blocks']:,} blocking keys) in {time.perf_counter() - t0:.0f}s "
        f"({workers} generating processes; database {t_db:.0f}s incl. index builds, ANALYZE)"
    )
    return sample


class _Inline:
    """``multiprocessing.Pool``'s imap in this process (``--workers 1``)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap(self, fn: Any, jobs: list[Any]) -> Any:
        return map(fn, jobs)


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


@contextmanager
def scratch_database(url: str | None, tmp: Path) -> Iterator[str]:
    """A fresh migrated database: SQLite in ``tmp``, or one made beside ``url`` on its
    PostgreSQL server (dropped at the end)."""
    if not url:
        yield f"sqlite:///{tmp / 'usmis.db'}"
        return
    name = f"usmis_bench_mpi_{os.getpid()}"
    admin = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def bench_realtime(persons: int, queries: int, seed: int, url: str | None, workers: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="usmis-bench-mpi-"))
    try:
        with scratch_database(url, tmp) as db_url:
            _realtime(Settings(data_dir=tmp, database_url=db_url), persons, queries, seed, workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _realtime(settings: Settings, persons: int, queries: int, seed: int, workers: int) -> None:
    upgrade(settings.resolved_database_url)
    service.keyring(settings)  # creates the key file the workers read
    print(f"[realtime] database: {make_url(settings.resolved_database_url).get_backend_name()}; "
          f"indexing {persons:,} persons (load average {load_average()}) …")  # fmt: skip
    sample = index_persons(settings, persons, seed, workers)
    # A long-lived pooled engine, as a server or ingest worker holds (NullPool closes the
    # last SQLite WAL connection after every transaction, which checkpoints: ~30 ms).
    engine = (
        make_engine(settings.resolved_database_url, poolclass=QueuePool)
        if settings.is_sqlite
        else make_engine(settings.resolved_database_url)
    )
    pop = Population(seed, 0)
    rng = random.Random(seed)
    lat: list[float] = []
    inside: list[float] = []  # the call itself, before the commit
    cpu: list[float] = []
    outcomes: dict[str, int] = {}
    quality = {"copy→own person": 0, "copy→new person": 0, "copy→other person": 0,
               "new→new person": 0, "new→someone": 0}  # fmt: skip
    warmup = min(20, queries)
    print(f"[realtime] {queries} queries after {warmup} warm-up calls (load average "
          f"{load_average()}) …")  # fmt: skip
    for q in range(-warmup, queries):
        copy = q % 2 == 0
        if copy:
            p = rng.choice(sample)
            rec = pop.record(p, f"Q{q}", "000000000000")
        else:
            p = pop.person(persons + q + warmup)
            rec = pop.record(p, f"Q{q}", "000000000000")
        t, c = time.perf_counter(), time.process_time()
        with transaction(engine) as conn:
            out = service.link_record(conn, settings, rec)
            t_in = time.perf_counter()
        if q < 0:
            continue
        lat.append((time.perf_counter() - t) * 1000)
        inside.append((t_in - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
        outcomes[out.method] = outcomes.get(out.method, 0) + 1
        if copy:
            kind = (
                "copy→own person"
                if out.person_key == f"{p['id']:032x}"
                else "copy→new person"
                if out.method == "new"
                else "copy→other person"
            )
        else:
            kind = "new→new person" if out.method == "new" else "new→someone"
        quality[kind] += 1
    load = load_average()
    sizes = []
    keys = service.keyring(settings)
    with transaction(engine) as conn:
        for _ in range(200):
            rec = pop.record(rng.choice(sample), "size", "000000000000")
            sizes.append(len(repo.candidates(conn, service.hashed_keys(keys, rec))))
    sizes.sort()
    lat.sort()
    inside.sort()
    cpu.sort()
    print(
        f"[realtime] {queries} link_record calls (each its own committed transaction) with "
        f"{persons:,} persons indexed: median {statistics.median(lat):.2f} ms, "
        f"p95 {pct(lat, 0.95):.2f} ms, max {lat[-1]:.2f} ms (target p95 ≤ 20 ms); "
        f"outcomes {outcomes}"
    )
    print(
        "[realtime] the call alone, before its commit (an ingest batch commits many at once):"
        f" median {statistics.median(inside):.2f} ms, p95 {pct(inside, 0.95):.2f} ms"
    )
    print(
        "[realtime] CPU time of this process per call (independent of other load): "
        f"median {statistics.median(cpu):.2f} ms, p95 {pct(cpu, 0.95):.2f} ms; "
        f"load average at the end {load}"
    )
    print(f"[realtime] decisions: {quality}")
    print(
        f"[realtime] candidates opened per call: median {statistics.median(sizes):.0f}, "
        f"p95 {pct(sizes, 0.95):.0f}, max {sizes[-1]} (cap {repo.CANDIDATE_LIMIT})"
    )
    engine.dispose()


def pct(values: list[float] | list[int], q: float) -> float:
    return float(values[int(q * (len(values) - 1))])


def bench_nation(nation_dir: Path, seed: int, url: str | None, model_kind: str) -> None:
    """Real-time linking quality: every source record of a synthetic nation (read with
    ingest's mappers) goes through ``link_record`` one at a time, in a shuffled order, in
    batches of 200 per transaction (as ingest commits); the links are then scored
    against the nation's ground truth.  ``model_kind``: ``trained`` (the weights a
    ``usmis mpi relink`` of these records trains) or ``default`` (a fresh index)."""
    from usmis.mpi.nation import read_nation

    t0 = time.perf_counter()
    nation = read_nation(nation_dir)
    recs = nation.records
    print(f"[nation] {len(recs):,} source records of {len(set(nation.truth)):,} persons read "
          f"in {time.perf_counter() - t0:.0f}s; model {model_kind}")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="usmis-bench-mpi-"))
    try:
        with scratch_database(url, tmp) as db_url:
            settings = Settings(data_dir=tmp, database_url=db_url)
            upgrade(db_url)
            engine = (
                make_engine(db_url, poolclass=QueuePool)
                if settings.is_sqlite
                else make_engine(db_url)
            )
            if model_kind == "trained":
                model = batch.link_batch(recs).model
                with transaction(engine) as conn:
                    service.save_model(conn, model)
            order = random.Random(seed).sample(range(len(recs)), len(recs))
            reviews = 0
            t0 = time.perf_counter()
            for start in range(0, len(order), 200):
                with transaction(engine) as conn:
                    for i in order[start : start + 200]:
                        out = service.link_record(conn, settings, recs[i])
                        reviews += len(out.review_ids)
            seconds = time.perf_counter() - t0
            with transaction(engine) as conn:  # the links as they are now (after merges)
                now_of = {pid: person for pid, person, _ in repo.all_links(conn)}
                still_open = int(service.stats(conn)["review_open"])
                merges = conn.execute(
                    select(func.count()).where(tables.link_event.c.action == "merge-person")
                ).scalar_one()
            engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    labels = [now_of[r.key] for r in recs]
    fig = evaluation.score(labels, nation.truth, review_tasks=still_open)
    print(
        f"[nation] real time, {len(recs):,} records in {seconds:.0f}s "
        f"({seconds / len(recs) * 1000:.2f} ms each, load average {load_average()}): "
        f"precision {fig.precision:.5f} recall {fig.recall:.5f} "
        f"cluster-recall {fig.cluster_recall:.4f} merged persons {fig.merged_persons} "
        f"split persons {fig.split_persons}; persons merged by bridging {merges}; "
        f"review tasks made {reviews}, open at the end "
        f"{still_open} (share {fig.review_share:.4f}); HL7 A40 merges not applied here"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server (any database on it): the bench makes and drops its own "
        "database there; default a SQLite file",
    )
    ap.add_argument("--workers", type=int, default=2, help="processes generating the index")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument(
        "--nation",
        type=Path,
        default=None,
        help="a `usmis synth` directory: measure real-time linking quality on it (only that)",
    )
    ap.add_argument("--nation-model", choices=("trained", "default"), default="trained")
    ap.add_argument("--skip-realtime", action="store_true")
    a = ap.parse_args()
    print(f"machine: {machine()}; load average {load_average()}")
    if a.nation is not None:
        bench_nation(a.nation, a.seed, a.database_url, a.nation_model)
        return
    if not a.skip_batch:
        bench_batch(a.records, a.seed)
    if not a.skip_realtime:
        bench_realtime(a.persons, a.queries, a.seed, a.database_url, a.workers)


if __name__ == "__main__":
    main()
