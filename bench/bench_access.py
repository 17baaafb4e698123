"""What the access policy and the audit log cost: reads and searches, on versus off.

Workload: P patients, each attached (EpisodeOfCare) to the clinician's organization, with
O observations each, written straight through the FHIR service, then ANALYZE.  Two real
servers (``usmis serve``, each its own process) over the *same* database — one with
policy + audit on, one with both off — are driven alternately by one HTTP client with a
clinician token (the same token, verified by both):

- read:    GET /fhir/Observation/{id}
- search:  GET /fhir/Observation?patient={id}&_count=10

"on" does per request: the type decision, one lookup per patient (care relationship,
emergency grant, consent of the person, person keys and the exfiltration guard's state),
fetched in the statement that reads the rows; the guard's count (a usage row per new
patient and hour), the policy's predicate inside the search SQL, and the hash-chained
audit entry, journaled to the process's spool and chained in the background
(usmis.audit.spool).
"off" runs the same endpoints with both switched off.

Each round runs a batch on one server then the other (the order alternating), so drift on
this shared machine hits both alike; the cost is the median over rounds of 1 - on/off
within the round (the rates printed are the medians; the spread of the rounds' costs is
printed too).  Target (issue 6): ≤ 15 %.  Also printed: SQL statements per request, counted
on the engine of an in-process server in a separate, unmeasured pass.

    .venv/bin/python bench/bench_access.py [--patients 200] [--obs 5] [--rounds 41]
        [--batch 100] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.pool import NullPool

from usmis.access.tokens import issue_token
from usmis.app import create_app
from usmis.config import Settings
from usmis.fhir.context import SystemAccess
from usmis.fhir.service import FhirService
from usmis.kit.crypto import keyring_for
from usmis.kit.db import FastStatement, make_engine, transaction, upgrade

ORG = "org-bench"


def machine() -> str:
    mem = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024 // 1024
    return f"{os.cpu_count()} cores, {mem} GiB RAM"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def serve(settings: Settings, counter: list[int]) -> Iterator[str]:
    """A real server in a thread; ``counter[0]`` counts the SQL statements it executes
    through SQLAlchemy (the hot ones run as ``FastStatement``s, counted apart)."""
    port = _free_port()
    app = create_app(settings)

    def count(*_args: Any) -> None:
        counter[0] += 1

    event.listen(app.state.engine, "before_cursor_execute", count)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def serve_process(settings: Settings) -> Iterator[str]:
    """``usmis serve`` in its own process (as deployed: the client is not in it)."""
    port = _free_port()
    env = {**os.environ, "USMIS_DATA_DIR": str(settings.data_dir),
           "USMIS_DATABASE_URL": settings.resolved_database_url,
           "USMIS_POLICY_ENABLED": str(settings.policy_enabled).lower(),
           "USMIS_AUDIT_ENABLED": str(settings.audit_enabled).lower(),
           "USMIS_EXFIL_PATIENTS_PER_HOUR": str(settings.exfil_patients_per_hour)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "usmis", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def load(settings: Settings, patients: int, obs: int) -> list[tuple[str, list[str]]]:
    """Write the workload with a trusted in-process writer (not measured)."""
    engine = make_engine(settings.resolved_database_url)
    keys = keyring_for(settings.resolved_key_file)
    out: list[tuple[str, list[str]]] = []
    with transaction(engine) as conn:
        svc = FhirService(conn, keys, SystemAccess(source_id="bench", author_org="org-source"))
        for _ in range(patients):
            pid = svc.create({"resourceType": "Patient", "gender": "female"}).resource["id"]
            ref = {"reference": f"Patient/{pid}"}
            svc.create({"resourceType": "EpisodeOfCare", "status": "active", "patient": ref,
                        "managingOrganization": {"reference": f"Organization/{ORG}"}})
            oids = [
                svc.create({
                    "resourceType": "Observation", "status": "final", "subject": ref,
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "valueQuantity": {"value": 60 + i, "unit": "/min"},
                }).resource["id"]
                for i in range(obs)
            ]
            out.append((pid, oids))
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))  # planner statistics, as a loaded database has them
    engine.dispose()
    return out


def run(settings: Settings, data: list[tuple[str, list[str]]], rounds: int, batch: int,
        label: str) -> dict[str, Any]:
    on = settings
    off = settings.model_copy(update={"policy_enabled": False, "audit_enabled": False})
    token = issue_token(settings, subject="dr-bench", role="clinician", org=ORG,
                        ttl_seconds=3600)
    headers = {"Authorization": f"Bearer {token}"}
    rng = random.Random(1)
    rates: dict[str, dict[str, list[float]]] = {"read": {"on": [], "off": []},
                                                "search": {"on": [], "off": []}}
    counters = {"on": [0], "off": [0]}
    statements: dict[str, dict[str, float]] = {"read": {}, "search": {}}

    def batch_rate(client: httpx.Client, base: str, kind: str) -> float:
        t0 = time.perf_counter()
        for _ in range(batch):
            pid, oids = data[rng.randrange(len(data))]
            if kind == "read":
                r = client.get(f"{base}/fhir/Observation/{rng.choice(oids)}", headers=headers)
            else:
                r = client.get(f"{base}/fhir/Observation",
                               params={"patient": pid, "_count": "10"}, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"{kind} on {base}: HTTP {r.status_code}")
        return batch / (time.perf_counter() - t0)

    # Unmeasured pass: SQL statements per request on an in-process server's engine.
    with serve(on, counters["on"]) as url_on, serve(off, counters["off"]) as url_off, \
            httpx.Client(timeout=60) as client:
        urls = {"on": url_on, "off": url_off}
        for _pid, oids in data:  # warm: every patient's first touch of the hour (a usage row)
            client.get(f"{url_on}/fhir/Observation/{oids[0]}", headers=headers)
        for kind in ("read", "search"):
            for mode in ("on", "off"):
                batch_rate(client, urls[mode], kind)  # warm
                before = counters[mode][0] + FastStatement.runs
                batch_rate(client, urls[mode], kind)
                after = counters[mode][0] + FastStatement.runs
                statements[kind][mode] = (after - before) / batch
    with serve_process(on) as url_on, serve_process(off) as url_off, \
            httpx.Client(timeout=60) as client:
        urls = {"on": url_on, "off": url_off}
        for kind in ("read", "search"):
            for mode in ("on", "off"):
                batch_rate(client, urls[mode], kind)  # warm
            for i in range(rounds):
                order = ("on", "off") if i % 2 == 0 else ("off", "on")
                for mode in order:
                    rates[kind][mode].append(batch_rate(client, urls[mode], kind))
    result: dict[str, Any] = {"backend": label, "statements": statements,
                              "floor": commit_floor(settings)}
    for kind in ("read", "search"):
        on_r, off_r = rates[kind]["on"], rates[kind]["off"]
        # Each round's two batches ran back to back: their ratio is what drift spares.
        costs = [1 - a / b for a, b in zip(on_r, off_r, strict=True)]
        q1, _, q3 = statistics.quantiles(costs, n=4)
        result[kind] = (statistics.median(off_r), statistics.median(on_r),
                        statistics.median(costs), (q1, q3))
    return result


def commit_floor(settings: Settings, n: int = 400) -> tuple[float, float]:
    """(read-only, durable one-row write) transaction, µs each, on this database: what
    any audited read must pay at least, whatever the audit does."""
    engine = make_engine(settings.resolved_database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_floor (x INTEGER)"))
    out: list[float] = []
    for sql in ("SELECT 1", "INSERT INTO bench_floor VALUES (1)"):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n // 5):
                with engine.begin() as conn:
                    conn.execute(text(sql))
            times.append((time.perf_counter() - t0) / (n // 5) * 1e6)
        out.append(statistics.median(times))
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE bench_floor"))
    engine.dispose()
    return out[0], out[1]


def report(res: dict[str, Any]) -> None:
    for kind in ("read", "search"):
        r_off, r_on, cost, (q1, q3) = res[kind]
        verdict = "meets" if cost <= 0.15 else "MISSES"
        n = res["statements"][kind]
        print(f"  {res['backend']:<11} {kind:<7} off {r_off:7.1f}/s   on {r_on:7.1f}/s   "
              f"cost {cost * 100:5.1f} % (rounds' middle half {q1 * 100:.0f}–{q3 * 100:.0f} %; "
              f"{verdict} the 15 % target)   "
              f"SQL statements/request off {n['off']:.1f} on {n['on']:.1f}")
    ro, rw = res["floor"]
    off_read_us = 1e6 / res["read"][0]
    print(f"  floor: a durable write commit costs {rw - ro:.0f} µs more than a read-only one "
          f"({ro:.0f} → {rw:.0f} µs) = {(rw - ro) / off_read_us * 100:.1f} % of an off read "
          f"({off_read_us:.0f} µs); every audited read pays it")
    print(f"  ({load_average()})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--obs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--postgres", default=os.environ.get("USMIS_BENCH_POSTGRES_URL", ""))
    ap.add_argument("--skip-sqlite", action="store_true")
    args = ap.parse_args()
    print(f"bench_access: {machine()}; {args.patients} patients × {args.obs} observations, "
          f"{args.rounds} rounds × {args.batch} requests per mode and kind, 1 HTTP client")
    print("  on = policy (care lookup, consent, guard) + audit (entry journaled before the "
          "answer, hash-chained in the background); off = both disabled; same data, same "
          "token, alternating")
    print(f"  at start: {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        # The guard runs (its cost is measured) but with a limit the workload cannot trip.
        s = Settings(data_dir=Path(tmp) / "data", database_url=f"sqlite:///{tmp}/bench.db",
                     exfil_patients_per_hour=10**9)
        s.ensure_data_dir()
        upgrade(s.resolved_database_url)
        if not args.skip_sqlite:
            data = load(s, args.patients, args.obs)
            report(run(s, data, args.rounds, args.batch, "sqlite"))
        if args.postgres:
            name = f"usmis_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(args.postgres, poolclass=NullPool, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            url = make_url(args.postgres).set(database=name).render_as_string(
                hide_password=False)
            try:
                ps = Settings(data_dir=Path(tmp) / "pgdata", database_url=url,
                              exfil_patients_per_hour=10**9)
                ps.ensure_data_dir()
                upgrade(url)
                pdata = load(ps, args.patients, args.obs)
                report(run(ps, pdata, args.rounds, args.batch, "postgresql"))
            finally:
                with admin.connect() as c:
                    c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()


if __name__ == "__main__":
    main()
