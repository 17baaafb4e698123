"""FHIR store benchmark (issue 3): ingest throughput, the raw-insert floor, search latency.

Workload, per backend (SQLite file; PostgreSQL when --pg-url is given):

1. load 200 transaction Bundles of 31 resources (Patient + 5 Encounter + 5 Condition +
   20 Observation, urn:uuid references) through the real HTTP API of ``usmis serve``
   (uvicorn, --server-workers processes) with 1 and with 4 concurrent clients; encryption,
   validation, search indexing and (if present) policy + audit are all on;
2. the floor, in the same run: the same resource JSON inserted raw (one table, one row
   per resource, 31 rows per transaction) into the same database, 1 and 4 clients; on
   PostgreSQL also the store's own rows for them (resource row + search-index rows,
   computed beforehand, COPY into copies of the real tables): the floor of this schema;
   and the floor's work behind the store's HTTP stack (``floor_app.py``, 4 clients): what
   HTTP costs; from these, what 40 % of the floor leaves for the store's own work;
   steps 1 and 2 run --rounds times (fresh Bundles each), interleaved, and the share of
   the floor is reported per round and as the median (one round takes seconds, and this
   machine's speed varies by half from minute to minute); each round prints where the
   CPU went (the server's processes, PostgreSQL, the clients) against the two cores'
   budget at the floor's rate;
3. grow the store to --search-size resources (in-process loader, same service code), then
   time Patient?identifier=, Observation?patient=&code= and Patient/$everything over HTTP
   (median, p95).

Prints the machine (cores, RAM) and all figures; no pass/fail.

    .venv/bin/python bench/bench_fhir.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import multiprocessing as mp
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import orjson
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
IIN = "https://usmis.kz/sid/iin"
LOINC = ["8867-4", "8480-6", "8462-4", "2708-6", "8310-5", "29463-7", "8302-2", "2339-0"]
ICD = ["I10", "E11.9", "J06.9", "K29.7", "M54.5", "J45.9", "N39.0", "I25.1"]
FAMILIES = ["Ахметов", "Смагулова", "Иванов", "Нурланова", "Ким", "Сейткали", "Жумабаев"]


# ------------------------------------------------------------------ workload
def make_bundle(rng: random.Random, n: int) -> tuple[dict[str, Any], str]:
    """One transaction Bundle of 31 resources; returns it and the Patient's IIN."""
    iin = f"{rng.randrange(10**11, 10**12)}"
    p = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
    entries: list[dict[str, Any]] = [{
        "fullUrl": p,
        "resource": {
            "resourceType": "Patient",
            "identifier": [{"system": IIN, "value": iin},
                           {"system": "https://usmis.kz/sid/source/bench/patient",
                            "value": f"b{n}"}],
            "name": [{"family": rng.choice(FAMILIES), "given": ["Test"]}],
            "telecom": [{"system": "phone", "value": f"+7701{rng.randrange(10**7):07d}"}],
            "gender": rng.choice(["male", "female"]),
            "birthDate": f"{rng.randrange(1940, 2020)}-0{rng.randrange(1, 10)}-1{rng.randrange(9)}",
        },
        "request": {"method": "POST", "url": "Patient"},
    }]
    encs = []
    for _ in range(5):
        e = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        encs.append(e)
        entries.append({
            "fullUrl": e,
            "resource": {
                "resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                          "code": "AMB"},
                "subject": {"reference": p},
                "period": {"start": f"2024-0{rng.randrange(1, 10)}-1{rng.randrange(10)}"},
            },
            "request": {"method": "POST", "url": "Encounter"},
        })
    for i in range(5):
        entries.append({
            "resource": {
                "resourceType": "Condition",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/"
                                               "CodeSystem/condition-clinical",
                                               "code": "active"}]},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                     "code": rng.choice(ICD)}]},
                "subject": {"reference": p}, "encounter": {"reference": encs[i]},
                "recordedDate": "2024-05-01",
            },
            "request": {"method": "POST", "url": "Condition"},
        })
    for i in range(20):
        entries.append({
            "resource": {
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": rng.choice(LOINC)}]},
                "subject": {"reference": p}, "encounter": {"reference": encs[i % 5]},
                "effectiveDateTime": f"2024-0{rng.randrange(1, 10)}-1{rng.randrange(10)}",
                "valueQuantity": {"value": round(rng.uniform(1, 200), 1), "unit": "u",
                                  "system": "http://unitsofmeasure.org", "code": "1"},
            },
            "request": {"method": "POST", "url": "Observation"},
        })
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, iin


# ------------------------------------------------------------------ environment
def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def machine() -> str:
    mem = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024 // 1024
    return f"{os.cpu_count()} cores, {mem} GiB RAM, Python {sys.version.split()[0]}"


class Backend:
    def __init__(self, kind: str, pg_url: str, workdir: Path, existing: str = "",
                 data_dir: str = "") -> None:
        self.kind = kind
        self.dbname = ""
        if existing:  # re-measure a store grown by an earlier run (--existing-db)
            self.data_dir = Path(data_dir)
            self.url = existing
            return
        self.data_dir = workdir / f"data-{kind}"
        self.data_dir.mkdir(parents=True)
        if kind == "sqlite":
            self.url = f"sqlite:///{self.data_dir / 'usmis.db'}"
        else:
            self.dbname = f"usmis_bench_{os.getpid()}"
            admin = create_engine(pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.dbname}"'))
                c.execute(text(f'CREATE DATABASE "{self.dbname}"'))
            admin.dispose()
            self.admin_url = pg_url
            self.url = make_url(pg_url).set(database=self.dbname).render_as_string(
                hide_password=False)
        from usmis.kit.db import upgrade

        upgrade(self.url)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "USMIS_DATA_DIR": str(self.data_dir),
                "USMIS_DATABASE_URL": self.url, "USMIS_LOG_LEVEL": "WARNING",
                "BENCH_FLOOR_URL": self.url}

    def settings(self) -> Any:
        from usmis.config import Settings

        return Settings(data_dir=self.data_dir, database_url=self.url)

    def drop(self) -> None:
        if self.dbname:
            admin = create_engine(self.admin_url, poolclass=NullPool,
                                  isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)'))
            admin.dispose()


class Server:
    """``usmis serve`` on a free port (or ``command``, given the port), up when /ready is."""

    def __init__(self, backend: Backend, workers: int,
                 command: Callable[[int], list[str]] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = command(self.port) if command else [
            str(Path(sys.executable).parent / "usmis"), "serve", "--port", str(self.port),
            "--workers", str(workers)]
        self.proc = subprocess.Popen(
            cmd, env=backend.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ------------------------------------------------------------------ measurements
def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process so far, from /proc (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(k for k, v in parent.items() if v == pid)
    return out


class CpuUse:
    """Where the machine's CPU went while a phase ran: the server's processes (when there
    is a server), this process (the clients), and the rest (PostgreSQL, mostly: nothing
    else runs) — from /proc, so that a figure can be read against the two cores' budget."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.pids = _tree(server_pid) if server_pid else []
        self.start = self._now()
        self.t0 = time.perf_counter()

    def _now(self) -> tuple[float, ...]:
        with open("/proc/stat") as fh:
            user, nice, system, _idle, _io, irq, softirq = map(int, fh.readline().split()[1:8])
        busy = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
        return busy, time.process_time(), *(_proc_cpu(p) for p in self.pids)

    def stop(self, resources: int) -> Cpu:
        end = self._now()
        wall = time.perf_counter() - self.t0
        busy, clients, *procs = (b - a for a, b in zip(self.start, end, strict=True))
        server = sum(procs)
        rest = busy - clients - server
        us = 1e6 / resources
        # Per server process: a keep-alive connection stays with the worker that accepted
        # it, so the clients' connections may be spread unevenly over the workers.
        split = "/".join(f"{p * us:.0f}" for p in procs if p * us >= 1)
        parts = ([f"server {server * us:.0f} ({split})"] if self.pids else []) + [
            f"PostgreSQL + rest {rest * us:.0f}", f"clients {clients * us:.0f}"]
        return Cpu(busy * us, f"CPU µs a resource: {', '.join(parts)} = {busy * us:.0f}; "
                   f"the cores {busy / wall / (os.cpu_count() or 1):.0%} busy")


class Cpu(NamedTuple):
    """The machine's CPU a resource took in a phase (µs), and where it went (text)."""

    total: float
    text: str

    def __str__(self) -> str:
        return self.text


def _run_clients(items: list[Any], clients: int, insert: Callable[[Any], None],
                 server_pid: int | None = None) -> tuple[float, Cpu]:
    """``insert`` each item (one transaction of 31 resources each) from ``clients`` threads
    taking them in order; the seconds it took, and where the CPU went."""
    queue = list(reversed(items))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                item = queue.pop()
            insert(item)

    cpu = CpuUse(server_pid)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, cpu.stop(31 * len(items))


def load_http(server: Server, token: str, bundles: list[bytes], clients: int
              ) -> tuple[float, Cpu]:
    """Resources per second for posting ``bundles`` with ``clients`` threads (a keep-alive
    connection each).  The clients are the standard library's ``http.client``: the load
    generator shares the server's two cores, and httpx spent ~30 µs of them a resource
    (a tenth of the whole), more than the floor's own clients spend (psycopg)."""
    local = threading.local()
    opened: list[http.client.HTTPConnection] = []
    lock = threading.Lock()
    failures: list[int] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    port = int(server.url.rsplit(":", 1)[1])

    def post(body: bytes) -> None:
        c = getattr(local, "conn", None)
        if c is None:
            c = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            with lock:
                opened.append(c)
        c.request("POST", "/fhir", body=body, headers=headers)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            failures.append(r.status)

    try:
        dt, cpu = _run_clients(bundles, clients, post, server.proc.pid)
    finally:
        for c in opened:
            c.close()
    if failures:
        raise RuntimeError(f"{len(failures)} bundles failed: {sorted(set(failures))}")
    return 31 * len(bundles) / dt, cpu


def raw_table(url: str, create: bool) -> None:
    """(Re)create or drop ``bench_raw``, the floor's one table."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as c:
        c.execute(text("DROP TABLE IF EXISTS bench_raw"))
        if create:
            c.execute(text("CREATE TABLE bench_raw (id VARCHAR(64) PRIMARY KEY, body TEXT)"))
    engine.dispose()


def raw_floor(url: str, bundles: list[dict[str, Any]], clients: int) -> tuple[float, Cpu]:
    """The same resource JSON inserted raw: one table, 31 rows per transaction."""
    from sqlalchemy.pool import QueuePool

    from usmis.kit.db import make_engine

    # Pooled like the server's engine (a NullPool SQLite engine checkpoints on every close).
    engine = make_engine(url, poolclass=QueuePool) if url.startswith("sqlite") else make_engine(url)
    raw_table(url, create=True)
    docs = [[{"id": str(uuid.uuid4()), "body": orjson.dumps(e["resource"]).decode()}
             for e in b["entry"]] for b in bundles]

    def insert(rows: list[dict[str, Any]]) -> None:
        with engine.begin() as c:
            c.execute(text("INSERT INTO bench_raw (id, body) VALUES (:id, :body)"), rows)

    dt, cpu = _run_clients(docs, clients, insert)
    engine.dispose()
    raw_table(url, create=False)
    return 31 * len(bundles) / dt, cpu


def http_floor(backend: Backend, workers: int, bodies: list[bytes], clients: int
               ) -> tuple[float, Cpu]:
    """The floor's work (``raw_floor``) behind the store's HTTP stack: ``floor_app`` under
    uvicorn with the store's workers, loaded as the store is (``load_http``)."""
    raw_table(backend.url, create=True)
    app = Server(backend, workers, command=lambda port: [
        sys.executable, "-m", "uvicorn", "floor_app:app", "--app-dir", str(ROOT / "bench"),
        "--port", str(port), "--workers", str(workers), "--log-level", "warning"])
    try:
        return load_http(app, "", bodies, clients)
    finally:
        app.stop()
        raw_table(backend.url, create=False)


def _bulk_worker(args: tuple[str, str, int, int, int]) -> int:
    """Load ``count`` bundles in-process (same service code as the API, no HTTP)."""
    url, key_file, seed, count, per_txn = args
    from usmis.fhir.service import FhirService
    from usmis.kit.crypto import keyring_for
    from usmis.kit.db import make_engine, unit_of_work

    engine = make_engine(url)
    keys = keyring_for(Path(key_file))
    rng = random.Random(seed)
    done = 0
    while done < count:
        with unit_of_work(engine, write=True) as conn:
            svc = FhirService(conn, keys)
            for _ in range(min(per_txn, count - done)):
                b, _iin = make_bundle(rng, seed * 10**7 + done)
                svc.transaction(b)
                done += 1
    engine.dispose()
    return done


def grow(backend: Backend, target: int, have: int, procs: int) -> int:
    need = max(0, (target - have) // 31)
    if need == 0:
        return have
    s = backend.settings()
    per = need // procs
    jobs = [(backend.url, str(s.resolved_key_file), 1000 + i,
             per + (1 if i < need % procs else 0), 10) for i in range(procs)]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(procs) as pool:
        done = sum(pool.map(_bulk_worker, jobs))
    dt = time.perf_counter() - t0
    print(f"    grew by {done * 31:,} resources in {dt:.0f} s "
          f"({done * 31 / dt:,.0f} resources/s, {procs} in-process loaders)")
    return have + done * 31


def latencies(server: Server, token: str, queries: list[str], warm: int = 5) -> tuple[float, float]:
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as c:
        for q in queries[:warm]:
            c.get(q)
        times = []
        for q in queries:
            t0 = time.perf_counter()
            r = c.get(q)
            times.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"{q.split('?')[0]} -> {r.status_code}")
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def sample_targets(backend: Backend, n: int) -> list[tuple[str, str]]:
    """(patient id, IIN) pairs of random loaded patients (read back through the service)."""
    from usmis.fhir.service import FhirService
    from usmis.kit.crypto import keyring_for
    from usmis.kit.db import make_engine, unit_of_work

    engine = make_engine(backend.url)
    s = backend.settings()
    keys = keyring_for(s.resolved_key_file)
    out = []
    with unit_of_work(engine, write=False) as conn:
        ids = [r[0] for r in conn.execute(text(
            "SELECT id FROM fhir_resource WHERE resource_type = 'Patient' "
            "ORDER BY id LIMIT 5000")).all()]
        svc = FhirService(conn, keys)
        for pid in random.Random(5).sample(ids, min(n, len(ids))):
            p = svc.read("Patient", pid)
            out.append((pid, p["identifier"][0]["value"]))
    engine.dispose()
    return out


# ------------------------------------------------------------------ main
def run_backend(kind: str, args: argparse.Namespace, workdir: Path) -> None:
    print(f"\n== {kind} ==")
    backend = Backend(kind, args.pg_url, workdir, args.existing_db, args.data_dir)
    try:
        from usmis.access.tokens import issue_token

        token = issue_token(backend.settings(), subject="bench", role="admin",
                            ttl_seconds=24 * 3600)
        if args.existing_db:
            search_phase(backend, args, token, count_resources(backend))
            return
        rng = random.Random(42)
        n = args.bundles
        cores = os.cpu_count() or 1
        shares: list[float] = []
        server = Server(backend, args.server_workers)
        try:
            for rnd in range(1, args.rounds + 1):
                # Each round: the store, then the floor, on the same fresh Bundles — a slow
                # stretch of the machine then touches both figures of a round.
                bundles = [make_bundle(rng, (rnd - 1) * 2 * n + i)[0] for i in range(2 * n)]
                bodies = [orjson.dumps(b) for b in bundles]
                r1, _ = load_http(server, token, bodies[:n], 1)
                r4, cpu4 = load_http(server, token, bodies[n:], 4)
                f1, _ = raw_floor(backend.url, bundles[:n], 1)
                f4, fcpu4 = raw_floor(backend.url, bundles[n:], 4)
                h4, hcpu4 = http_floor(backend, args.server_workers, bodies[n:], 4)
                shares.append(100 * r4 / f4)
                print(f"  round {rnd}: load {n} bundles x 31 resources (HTTP, "
                      f"{args.server_workers} server workers; the server idles while the "
                      "floor runs):")
                print(f"    1 client : {r1:8,.0f} resources/s   raw floor {f1:8,.0f}/s   "
                      f"= {100 * r1 / f1:5.1f}% of floor")
                print(f"    4 clients: {r4:8,.0f} resources/s   raw floor {f4:8,.0f}/s   "
                      f"= {100 * r4 / f4:5.1f}% of floor")
                print(f"    4 clients, the floor's work behind the store's HTTP stack: "
                      f"{h4:8,.0f}/s = {100 * h4 / f4:5.1f}% of floor")
                budget = cores * 1e6 / (0.4 * f4)
                print(f"    4 clients, the store: {cpu4}\n"
                      f"    4 clients, the floor: {fcpu4}\n"
                      f"    4 clients, the floor behind HTTP: {hcpu4}\n"
                      f"    ({cores} cores give {cores * 1e6 / f4:.0f} µs a resource at the "
                      f"floor's rate, {budget:.0f} at 40 % of it)")
                if kind == "postgresql":
                    rf, per, rcpu = rows_floor(backend.url, bundles[n:], 4)
                    print(f"    the store's own rows inserted raw (resource row + {per:.1f} "
                          f"index rows each, COPY), 4 clients: {rf:8,.0f} resources/s = "
                          f"{100 * rf / f4:5.1f}% of the one-table floor; the store reached "
                          f"{100 * r4 / rf:5.1f}% of it; {rcpu}")
                    # The store = its rows' COPY and PostgreSQL + the HTTP stack + its own
                    # work (validation, sealing, index extraction, policy, audit).
                    http = hcpu4.total - fcpu4.total
                    print(f"    at 40 % of the floor: {budget:.0f} µs a resource, less the "
                          f"store's rows ({rcpu.total:.0f}) and the HTTP stack "
                          f"({http:.0f}) leaves {budget - rcpu.total - http:.0f} for the "
                          f"store's own work; it spent "
                          f"{cpu4.total - rcpu.total - http:.0f}")
        finally:
            server.stop()
        print(f"  4 clients, share of the floor over {len(shares)} rounds: median "
              f"{statistics.median(shares):.1f} % (min {min(shares):.1f}, max {max(shares):.1f})")
        have = 2 * n * 31 * args.rounds
        if args.search_size > have:
            have = grow(backend, args.search_size, have, args.loaders)
        analyze(backend)
        search_phase(backend, args, token, have)
    finally:
        if not args.keep:
            backend.drop()


def rows_floor(url: str, bundles: list[dict[str, Any]], clients: int
               ) -> tuple[float, float, Cpu]:
    """PostgreSQL: the rows the store itself writes for the same resources — each resource
    row (four indexes) and its search-index rows (two B-trees each) — computed before the
    clock starts and only inserted, by COPY, into copies of the real tables, 31 resources
    per transaction.  What no code of ours can beat with this schema.  Returns
    (resources/s, index rows per resource, where the CPU went)."""
    from sqlalchemy import Column, MetaData, Table

    from usmis.fhir.search.indexing import index_rows
    from usmis.fhir.search.tables import INDEX_TABLES
    from usmis.fhir.tables import resource as resource_table
    from usmis.kit.db import insert_rows, make_engine

    engine = make_engine(url)
    md = MetaData()
    real = {"fhir_resource": resource_table, **INDEX_TABLES}
    copies = {name: Table(f"bench_{name}", md, *[Column(c.name, c.type) for c in t.columns])
              for name, t in real.items()}
    with engine.begin() as c:
        for name in real:
            c.execute(text(f"DROP TABLE IF EXISTS bench_{name}"))
            c.execute(text(f"CREATE TABLE bench_{name} (LIKE {name} INCLUDING ALL)"))

    def blind(value: str) -> str:  # the shape of a blind index, not its key
        return hashlib.sha256(value.encode()).hexdigest()[:32]

    now = datetime.now(UTC)
    work: list[dict[str, list[dict[str, Any]]]] = []
    n_index = 0
    for b in bundles:
        tables: dict[str, list[dict[str, Any]]] = {"fhir_resource": []}
        for e in b["entry"]:
            res = {**e["resource"], "id": str(uuid.uuid4())}
            tables["fhir_resource"].append({
                "resource_type": res["resourceType"], "id": res["id"], "version_id": 1,
                "last_updated": now, "deleted": False, "patient_id": None, "source_id": None,
                "author_org": None, "sensitivity": None, "kek_id": None, "dek": None,
                "body": orjson.dumps(res)})
            for name, rows in index_rows(res["resourceType"], res, blind).items():
                tables.setdefault(name, []).extend(rows)
                n_index += len(rows)
        work.append(tables)

    def insert(tables: dict[str, list[dict[str, Any]]]) -> None:
        with engine.begin() as c:
            for name, rows in tables.items():
                insert_rows(c, copies[name], rows)

    dt, cpu = _run_clients(work, clients, insert)
    with engine.begin() as c:
        for name in real:
            c.execute(text(f"DROP TABLE bench_{name}"))
    engine.dispose()
    return 31 * len(bundles) / dt, n_index / (31 * len(bundles)), cpu


def analyze(backend: Backend) -> None:
    """Planner statistics after a bulk load (what an operator runs after a back-load;
    autovacuum would get there later).  Without them PostgreSQL may walk the primary key
    for ORDER BY id LIMIT n instead of starting from the index rows."""
    engine = create_engine(backend.url, poolclass=NullPool)
    with engine.begin() as c:
        c.execute(text("ANALYZE"))
    engine.dispose()


def count_resources(backend: Backend) -> int:
    engine = create_engine(backend.url, poolclass=NullPool)
    with engine.connect() as c:
        n = int(c.execute(text("SELECT count(*) FROM fhir_resource")).scalar_one())
    engine.dispose()
    return n


def search_phase(backend: Backend, args: argparse.Namespace, token: str, have: int) -> None:
    targets = sample_targets(backend, args.queries)
    server = Server(backend, 1)
    try:
        q_ident = [f"/fhir/Patient?identifier={IIN}|{iin}" for _, iin in targets]
        q_obs = [f"/fhir/Observation?patient={pid}&code=http://loinc.org|{LOINC[i % 8]}"
                 for i, (pid, _) in enumerate(targets)]
        q_all = [f"/fhir/Patient/{pid}/$everything" for pid, _ in targets]
        print(f"  search latency at {have:,} resources ({len(targets)} queries each, "
              "1 client, HTTP):")
        for name, qs in (("Patient?identifier=", q_ident),
                         ("Observation?patient=&code=", q_obs),
                         ("Patient/$everything", q_all)):
            med, p95 = latencies(server, token, qs)
            print(f"    {name:28s} median {med:6.1f} ms   p95 {p95:6.1f} ms")
    finally:
        server.stop()
    print("  the same queries in-process (service + search + decrypt, no HTTP/token/audit):")
    for name, (med, p95) in in_process_latencies(backend, targets).items():
        print(f"    {name:28s} median {med:6.1f} ms   p95 {p95:6.1f} ms")


def in_process_latencies(
    backend: Backend, targets: list[tuple[str, str]]
) -> dict[str, tuple[float, float]]:
    """Separates the store's own cost from the HTTP server, token check and audit."""
    from usmis.fhir import bundles
    from usmis.fhir.service import FhirService
    from usmis.kit.crypto import keyring_for
    from usmis.kit.db import make_engine, unit_of_work

    engine = make_engine(backend.url)
    keys = keyring_for(backend.settings().resolved_key_file)
    out: dict[str, tuple[float, float]] = {}

    def ident(svc: FhirService, i: int) -> object:
        return bundles.search_bundle(svc, "Patient", [("identifier", f"{IIN}|{targets[i][1]}")])

    def obs(svc: FhirService, i: int) -> object:
        return bundles.search_bundle(svc, "Observation", [
            ("patient", targets[i][0]), ("code", f"http://loinc.org|{LOINC[i % 8]}")])

    def everything(svc: FhirService, i: int) -> object:
        return svc.everything(targets[i][0])

    for name, fn in (("Patient?identifier=", ident), ("Observation?patient=&code=", obs),
                     ("Patient/$everything", everything)):
        times = []
        for i in range(len(targets)):
            t0 = time.perf_counter()
            with unit_of_work(engine, write=False) as conn:
                fn(FhirService(conn, keys, base_url="http://bench/fhir"), i)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        out[name] = (statistics.median(times), times[int(len(times) * 0.95) - 1])
    engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--pg-url", default=os.environ.get(
        "USMIS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--bundles", type=int, default=200)
    ap.add_argument("--server-workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="load rounds (store, then floor); the share's median is reported")
    ap.add_argument("--search-size", type=int, default=1_000_000)
    ap.add_argument("--loaders", type=int, default=2)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the PostgreSQL bench database")
    ap.add_argument("--existing-db", default="",
                    help="only measure search on this already loaded database URL")
    ap.add_argument("--data-dir", default="", help="its data dir (key file), with --existing-db")
    args = ap.parse_args()
    print(f"bench_fhir: {machine()}")
    print(f"workload: {args.bundles} transaction Bundles x 31 resources (1 Patient, "
          "5 Encounter, 5 Condition, 20 Observation) per client setting; AES-256-GCM per "
          "record, R4 validation, search indexing on")
    workdir = Path(tempfile.mkdtemp(prefix="usmis-bench-"))
    try:
        kinds = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
        for kind in kinds:
            run_backend(kind, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
