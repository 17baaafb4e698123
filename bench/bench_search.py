"""Benchmark: FHIR search latency over 1M resources, and index extraction speed.

Workload: ``--patients`` synthetic patients (default 100,000), each with 1 Patient,
2 Encounters and 7 Observations (LOINC codes from a pool of 40, values, dates) = 10
resources per patient = 1,000,000 resources.  Resources go into STORE's ``fhir_resource``
table (opaque columns only: search never reads bodies) and their index rows are produced
by the real extractor (:func:`usmis.fhir.search.index_rows` with a real keyed HMAC) and
bulk-loaded directly (COPY on PostgreSQL, executemany on SQLite), indexes built after the
load.  Then it times, through the real :func:`usmis.fhir.search.search`:

- ``Patient?identifier=<IIN>``                     (blind token lookup)
- ``Observation?patient=<id>&code=<system|code>``  (reference + token)
- ``Observation?patient=<id>&_sort=-date&_count=10`` (sorted page of a compartment)

and prints median and p95 per query (target from issue 3: p95 <= 20 ms).  Everything is
synthetic (invented names and numbers).

    .venv/bin/python bench/bench_search.py [--patients 100000] [--backends sqlite,postgresql]
        [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--queries 300]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Index, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from usmis.fhir.search import index_rows, search
from usmis.fhir.search.tables import INDEX_TABLES
from usmis.kit.db import make_engine, upgrade

KEY = hashlib.sha256(b"usmis bench search: synthetic data only").digest()  # reusable runs
LOINC = [f"{1000 + i * 37}-{i % 10}" for i in range(40)]
FAMILIES = ["Aitova", "Bekova", "Sadykova", "Nurlanova", "Omarova", "Ivanova", "Kim", "Li"]
GIVEN = ["Aigerim", "Dana", "Madina", "Asel", "Zhanna", "Olga", "Saule", "Alina"]
CHUNK = 2000  # patients per load chunk


def blind(value: str) -> str:
    return hmac.new(KEY, value.encode(), hashlib.sha256).digest()[:16].hex()


def make_patient(rng: random.Random, n: int) -> tuple[list[dict[str, Any]], str, str]:
    pid = str(uuid.UUID(int=rng.getrandbits(128), version=4))  # reproducible for --reuse
    iin = f"{rng.randrange(10**11, 10**12)}"
    pat = {
        "resourceType": "Patient", "id": pid,
        "identifier": [{"system": "https://usmis.kz/sid/iin", "value": iin},
                       {"system": "https://usmis.kz/sid/source/s1/patient", "value": f"P{n}"}],
        "name": [{"family": rng.choice(FAMILIES), "given": [rng.choice(GIVEN)]}],
        "telecom": [{"system": "phone", "value": f"+7701{rng.randrange(10**7):07d}"}],
        "gender": rng.choice(["female", "male"]),
        "birthDate": f"{rng.randrange(1940, 2020)}-{rng.randrange(1, 13):02d}-"
                     f"{rng.randrange(1, 29):02d}",
        "address": [{"city": "Almaty", "line": [f"Street {rng.randrange(500)}"]}],
    }  # fmt: skip
    out: list[dict[str, Any]] = [pat]
    encs = []
    for _ in range(2):
        eid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        encs.append(eid)
        day = f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        out.append({
            "resourceType": "Encounter", "id": eid, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"},
            "period": {"start": f"{day}T09:00:00Z", "end": f"{day}T09:30:00Z"},
            "serviceProvider": {"reference": f"Organization/org{rng.randrange(300)}"},
        })  # fmt: skip
    for _ in range(7):
        code = rng.choice(LOINC)
        out.append({
            "resourceType": "Observation", "status": "final",
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"},
            "encounter": {"reference": f"Encounter/{rng.choice(encs)}"},
            "effectiveDateTime": f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
                                 f"T10:{rng.randrange(60):02d}:00Z",
            "valueQuantity": {"value": round(rng.uniform(1, 200), 1), "unit": "mmol/L",
                              "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        })  # fmt: skip
    return out, iin, pid


class Loader:
    """Bulk loader of resource rows and index rows into one backend."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pg = engine.dialect.name == "postgresql"
        self.raw = engine.raw_connection()
        self.cols = {name: [c.name for c in t.columns] for name, t in INDEX_TABLES.items()}
        if not self.pg:
            cur = self.raw.cursor()
            cur.execute("PRAGMA synchronous=OFF")
            cur.close()

    def drop_indexes(self) -> None:
        with self.engine.begin() as conn:
            for t in INDEX_TABLES.values():
                for ix in t.indexes:
                    conn.execute(text(f"DROP INDEX IF EXISTS {ix.name}"))

    def create_indexes(self) -> None:
        with self.engine.begin() as conn:
            if self.pg:
                conn.execute(text("SET maintenance_work_mem = '512MB'"))
            for t in INDEX_TABLES.values():
                for ix in t.indexes:
                    assert isinstance(ix, Index)
                    ix.create(conn)
            conn.execute(text("ANALYZE"))

    def load(self, resources: list[dict[str, Any]], rows: dict[str, list[dict[str, Any]]]) -> None:
        now = datetime.now(UTC)
        res_rows = [
            (r["resourceType"], r["id"], 1, now, False,
             r["id"] if r["resourceType"] == "Patient" else r["subject"]["reference"][8:])
            for r in resources
        ]  # fmt: skip
        cur = self.raw.cursor()
        rcols = "resource_type, id, version_id, last_updated, deleted, patient_id"
        if self.pg:
            with cur.copy(f"COPY fhir_resource ({rcols}) FROM STDIN") as cp:  # type: ignore[attr-defined]
                for row in res_rows:
                    cp.write_row(row)
            for name, rs in rows.items():
                cols = self.cols[name]
                with cur.copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN") as cp:  # type: ignore[attr-defined]
                    for r in rs:
                        cp.write_row([r[c] for c in cols])
        else:
            cur.executemany(
                f"INSERT INTO fhir_resource ({rcols}) VALUES (?, ?, ?, ?, ?, ?)",
                [(a, b, c, d.strftime("%Y-%m-%d %H:%M:%S.%f"), int(e), f)
                 for a, b, c, d, e, f in res_rows],
            )  # fmt: skip
            for name, rs in rows.items():
                cols = self.cols[name]
                ph = ", ".join("?" for _ in cols)
                cur.executemany(
                    f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({ph})",
                    [[r[c] for c in cols] for r in rs],
                )
        cur.close()
        self.raw.commit()

    def close(self) -> None:
        self.raw.close()


def chunks(
    n_patients: int, seed: int = 42
) -> Iterator[tuple[list[dict[str, Any]], list[tuple[str, str]]]]:
    rng = random.Random(seed)
    for start in range(0, n_patients, CHUNK):
        resources: list[dict[str, Any]] = []
        people: list[tuple[str, str]] = []
        for n in range(start, min(start + CHUNK, n_patients)):
            rs, iin, pid = make_patient(rng, n)
            resources += rs
            people.append((iin, pid))
        yield resources, people


def timeit(fn: Callable[[], Any], n: int) -> tuple[float, float, float]:
    """(median ms, p95 ms, client CPU ms per query) — CPU shows our own share under load."""
    for _ in range(min(20, n)):
        fn()
    times = []
    cpu = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    cpu_ms = (time.process_time() - cpu) / n * 1000
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], cpu_ms


def extraction_speed() -> None:
    rng = random.Random(1)
    rs, _, _ = make_patient(rng, 0)
    for rtype in ("Patient", "Encounter", "Observation"):
        res = next(r for r in rs if r["resourceType"] == rtype)
        n = 20000
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            index_rows(rtype, res, blind)
        us = (time.perf_counter() - t) / n * 1e6
        cpu = (time.process_time() - c) / n * 1e6
        nrows = sum(len(v) for v in index_rows(rtype, res, blind).values())
        print(f"  index_rows({rtype}): {cpu:.1f} us CPU ({us:.1f} us wall) per resource, "
              f"{nrows} index rows")  # fmt: skip


def run_queries(conn: Any, sample: list[tuple[str, str]], rng: random.Random, n: int) -> None:
    it = iter(sample * 10)

    def q_identifier() -> None:
        iin, pid = next(it)
        r = search(conn, "Patient", [("identifier", f"https://usmis.kz/sid/iin|{iin}")],
                   base_url="http://x/fhir", hmac=blind)  # fmt: skip
        assert r.ids == [pid], "identifier lookup must find the patient"

    def q_patient_code() -> None:
        _, pid = next(it)
        search(conn, "Observation",
               [("patient", pid), ("code", f"http://loinc.org|{rng.choice(LOINC)}")],
               base_url="http://x/fhir", hmac=blind)  # fmt: skip

    def q_patient_sorted() -> None:
        _, pid = next(it)
        r = search(conn, "Observation", [("patient", pid), ("_sort", "-date"), ("_count", "10")],
                   base_url="http://x/fhir", hmac=blind)  # fmt: skip
        assert len(r.ids) == 7

    for label, fn in (
        ("Patient?identifier=", q_identifier),
        ("Observation?patient=&code=", q_patient_code),
        ("Observation?patient=&_sort=-date&_count=10", q_patient_sorted),
    ):
        med, p95, cpu = timeit(fn, n)
        verdict = "OK" if p95 <= 20 else "ABOVE TARGET"
        print(f"  {label:45s} median {med:6.2f} ms   p95 {p95:6.2f} ms   "
              f"client CPU {cpu:4.2f} ms   (target p95 <= 20 ms: {verdict})")  # fmt: skip
    print(f"  load average now: {os.getloadavg()[0]:.1f} (other work on the machine)")


def load_all(engines: dict[str, Engine], n_patients: int) -> list[tuple[str, str]]:
    """Generate, index and bulk-load everything; returns (IIN, patient id) of each person."""
    loaders = {b: Loader(eng) for b, eng in engines.items()}
    for ld in loaders.values():
        ld.drop_indexes()
    t0 = time.perf_counter()
    people: list[tuple[str, str]] = []
    n_rows = 0
    extract_s = 0.0
    load_s = dict.fromkeys(loaders, 0.0)
    for resources, ppl in chunks(n_patients):
        people += ppl
        t = time.perf_counter()
        rows: dict[str, list[dict[str, Any]]] = {}
        for r in resources:
            for table, rs in index_rows(r["resourceType"], r, blind).items():
                rows.setdefault(table, []).extend(rs)
        extract_s += time.perf_counter() - t
        n_rows += sum(len(v) for v in rows.values())
        for b, ld in loaders.items():
            t = time.perf_counter()
            ld.load(resources, rows)
            load_s[b] += time.perf_counter() - t
    total_s = time.perf_counter() - t0
    print(f"generated and indexed {n_patients * 10:,} resources -> {n_rows:,} index rows "
          f"(extraction {extract_s:.0f} s, total {total_s:.0f} s)")  # fmt: skip
    for b, ld in loaders.items():
        t = time.perf_counter()
        ld.create_indexes()
        ld.close()
        print(f"  {b}: bulk load {load_s[b]:.0f} s, index build {time.perf_counter() - t:.0f} s")
    return people


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument(
        "--pg-url",
        default=os.environ.get(
            "USMIS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    ap.add_argument(
        "--reuse",
        default="",
        help="skip loading: SQLITE_FILE,PG_DATABASE kept by an earlier --keep run "
        "(same --patients; either part may be empty)",
    )
    args = ap.parse_args()

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: {os.cpu_count()} cores, {ram:.1f} GiB RAM, "
          f"load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    print(f"workload: {args.patients} patients x (1 Patient + 2 Encounter + 7 Observation) = "
          f"{args.patients * 10:,} resources")  # fmt: skip
    print("index extraction (real extractor, keyed HMAC for blind values):")
    extraction_speed()

    tmp = tempfile.mkdtemp(prefix="usmis-bench-search-")
    urls: dict[str, str] = {}
    pg_name = ""
    admin = create_engine(args.pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    reuse_sqlite, _, reuse_pg = args.reuse.partition(",")
    if "sqlite" in backends:
        urls["sqlite"] = f"sqlite:///{reuse_sqlite or f'{tmp}/bench.db'}"
    if "postgresql" in backends:
        pg_name = reuse_pg or f"usmis_bench_search_{os.getpid()}"
        if not reuse_pg:
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{pg_name}"'))
        urls["postgresql"] = (
            make_url(args.pg_url).set(database=pg_name).render_as_string(hide_password=False)
        )
    engines: dict[str, Engine] = {}
    try:
        for b, url in urls.items():
            if not args.reuse:
                upgrade(url)
            engines[b] = make_engine(url)
        if args.reuse:
            people = [p for _, ppl in chunks(args.patients) for p in ppl]
            print(f"reusing loaded databases: {urls}")
        else:
            people = load_all(engines, args.patients)

        rng = random.Random(7)
        sample = rng.sample(people, min(len(people), 2000))
        for b, eng in engines.items():
            print(f"\n{b}: search latency over {args.patients * 10:,} resources "
                  f"({args.queries} queries each, after 20 warm-up queries)")  # fmt: skip
            with eng.connect() as conn:
                run_queries(conn, sample, rng, args.queries)
    finally:
        for eng in engines.values():
            eng.dispose()
        if pg_name and not args.keep and not args.reuse:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
        admin.dispose()
        if not args.keep or args.reuse or "sqlite" not in urls:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing of ours to keep in it
        if args.keep and not args.reuse:
            print(f"kept (rerun with --reuse {tmp}/bench.db,{pg_name})")


if __name__ == "__main__":
    main()
