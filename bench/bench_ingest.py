"""Ingest benchmark: channel intake, MLLP ACK latency, MLLP → stored FHIR, a whole nation.

    .venv/bin/python bench/bench_ingest.py [--messages 10000] [--nation-people 2000]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
        [--skip-nation | --nation-only] [--backends sqlite,postgresql]

The issue's whole-nation figure is for 100,000 people (~2.3M messages, ~5M resources, an
hour and more on 2 cores): `--nation-only --nation-people 100000 --backends postgresql`;
a long nation prints a progress line a minute.

Prints the workload, the machine (cores, RAM, load average: the machine may be shared) and,
per backend (the listener runs as ``usmis mllp serve`` in its own process, the senders in
this one): MLLP ACK round-trip median/p95 (one sender, no worker running), MLLP intake
msgs/s with 8 senders, MLLP → stored FHIR msgs/s and resources/s with workers running
(after intake, and live with 8 senders), MLLP ACK median/p95 under a steady load
(8 senders offering --paced-rate msgs/s together while workers store, or half the
workers' measured rate where that is less: a load the backend can carry),
REST intake msgs/s (an EHR's feed of a 2,000-people nation: a Bundle a post with 4
clients, and NDJSON bodies of 200 lines), file intake rows/s (its claims and population
extracts), and the floor measured in the same run: raw committed single-row inserts/s into
one table of the same database.  Targets of the issue (2 cores): ≥ 1,000 HL7 msgs/s MLLP →
stored on PostgreSQL; ACK p95 ≤ 10 ms; nation ≥ 1,500 resources/s.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from usmis.config import Settings
from usmis.ingest import repository as repo
from usmis.ingest import sources
from usmis.ingest.channels.files import load_file
from usmis.ingest.channels.mllp import MllpSender
from usmis.ingest.mapping.common import iin_valid
from usmis.ingest.reconcile import reconcile
from usmis.ingest.service import (
    ingest_nation,
    read_nation,
    register_nation,
    rest_server,
    start_workers,
    stop_workers,
    worker_env,
)
from usmis.kit.db import make_engine, transaction, upgrade
from usmis.synth.names import KZ_MALE, KZ_SURNAMES_BARE

SURNAMES = [*KZ_SURNAMES_BARE, "Ахметов", "Иванов", "Ким", "Жумабаев", "Омаров", "Касымов"]


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, load average "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")


def _iin(n: int, born: date) -> str:
    """A valid IIN, distinct per n (< 90,000) — its digits carry nothing about the person."""
    for serial in range(n % 90_000 * 10, 10**6):
        iin = f"{born:%y%m%d}3{serial:05d}"[:12]
        if iin_valid(iin):
            return iin
    return ""


def messages(n: int, source: str) -> list[bytes]:
    """n distinct ADT^A01 (with a DG1) and ORU^R01 (3 OBX) messages, half each."""
    out = []
    for i in range(n):
        ts = f"202403{1 + i % 28:02d}{i % 24:02d}{i % 60:02d}00"
        # Distinct people: surname, given name and birth date vary as in a real feed (one
        # name and birth date for everyone would put the whole feed in one matching block).
        name = (f"{SURNAMES[i % len(SURNAMES)]}^{KZ_MALE[(i // 7) % len(KZ_MALE)]}^"
                f"{KZ_MALE[(i // 3) % len(KZ_MALE)]}ұлы")
        born = date(1940, 1, 1) + timedelta(days=(i * 7919) % 30000)
        pid = (f"PID|1||B{i:07d}^^^{source}^MR~{_iin(i, born)}^^^KZIIN^NN||{name}"
               f"||{born:%Y%m%d}|M|||ул Тестовая {i}^^Алматы^^^KZ||+7700{i:07d}")
        if i % 2 == 0:
            segs = [f"MSH|^~\\&|{source.upper()}|990340000001|USMIS|MOH|{ts}||ADT^A01^ADT_A01|"
                    f"B{i:08d}|P|2.5|||AL|NE||UNICODE UTF-8", f"EVN|A01|{ts}", pid,
                    "PV1|1|I|WARD^^^990340000001||||PR000001^Врач^Тест||||||||||||"
                    f"V{i:08d}" + "|" * 25 + ts, f"DG1|1||I10^^I10||{ts}|A"]
        else:
            segs = [f"MSH|^~\\&|{source.upper()}|990340000001|USMIS|MOH|{ts}||ORU^R01^ORU_R01|"
                    f"B{i:08d}|P|2.5|||AL|NE||UNICODE UTF-8", pid,
                    f"OBR|1|P{i}|F{i:08d}|24323-8^Panel^LN|||{ts}" + "|" * 18 + "F",
                    f"OBX|1|NM|2345-7^Glucose^LN||5.{i % 10}|mmol/L|3.9-6.1|N|||F|||{ts}",
                    f"OBX|2|NM|2160-0^Creatinine^LN||8{i % 10}|umol/L|62-115|N|||F|||{ts}",
                    f"OBX|3|NM|1742-6^ALT^LN||2{i % 10}|U/L|7-41|N|||F|||{ts}"]
        out.append("\r".join(segs).encode())
    return out


class Listener:
    """``usmis mllp serve`` in its own process, as deployed: the bench's senders run in
    this process, and would otherwise share its interpreter lock with the listener."""

    def __init__(self, settings: Settings) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "usmis", "mllp", "serve", "--port", str(self.port)],
            env=worker_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("usmis mllp serve did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


CREATED: list[str] = []


def drop_databases(pg_url: str) -> None:
    if not CREATED:
        return
    admin = create_engine(pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        for name in CREATED:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def fresh_database(kind: str, pg_url: str, tmp: Path) -> Settings:
    if kind == "sqlite":
        d = tmp / f"sqlite-{uuid.uuid4().hex[:6]}"
        d.mkdir()
        s = Settings(data_dir=d)
    else:
        name = f"usmis_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        CREATED.append(name)
        d = tmp / name
        d.mkdir()
        s = Settings(data_dir=d, database_url=pg_url.rsplit("/", 1)[0] + "/" + name)
    upgrade(s.resolved_database_url)
    return s


def raw_insert_floor(settings: Settings, n: int = 1000) -> float:
    eng = make_engine(settings.resolved_database_url)
    with eng.begin() as c:
        c.execute(text("CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, body BLOB)")
                  if settings.is_sqlite else
                  text("CREATE TABLE bench_floor (id serial PRIMARY KEY, body bytea)"))
    body = os.urandom(600)
    t0 = time.perf_counter()
    for _ in range(n):
        with eng.begin() as c:
            c.execute(text("INSERT INTO bench_floor (body) VALUES (:b)"), {"b": body})
    dt = time.perf_counter() - t0
    eng.dispose()
    return n / dt


def send(port: int, msgs: list[bytes], connections: int, rate: float | None = None
         ) -> tuple[float, list[float]]:
    """Send over ``connections`` parallel MLLP connections; (seconds, per-message RTTs).
    ``rate``: the connections together offer that many msgs/s, each on a fixed schedule (a
    late ACK delays only its own connection's next message); else each sends flat out."""
    chunks = [msgs[i::connections] for i in range(connections)]
    rtts: list[float] = []
    lock = threading.Lock()
    gap = connections / rate if rate else 0.0
    t0 = time.perf_counter() + (0.05 if rate else 0.0)

    def run(k: int, chunk: list[bytes]) -> None:
        s = MllpSender("127.0.0.1", port)
        local = []
        for j, m in enumerate(chunk):
            wait = t0 + (j + k / connections) * gap - time.perf_counter()
            if rate and wait > 0:
                time.sleep(wait)
            t = time.perf_counter()
            ack = s.send(m)
            local.append(time.perf_counter() - t)
            assert b"MSA|AA" in ack, ack[:200]
        s.close()
        with lock:
            rtts.extend(local)

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(run, range(connections), chunks))
    return time.perf_counter() - t0, rtts


def steady_rate(conn: Any) -> float:
    """Messages/s between the first and the last batch commit of the inbox's messages (the
    messages of the first commits not counted): the workers' throughput without their
    processes' start-up (~1 s of imports), which the wall-clock figure includes."""
    first, last = conn.execute(text(
        "SELECT min(processed_at), max(processed_at) FROM ingest_inbox")).one()
    if first is None or last == first:
        return 0.0
    later = conn.execute(text("SELECT count(*) FROM ingest_inbox WHERE processed_at > "
                              "(SELECT min(processed_at) FROM ingest_inbox)")).scalar_one()
    if isinstance(first, str):  # SQLite keeps the text
        first, last = datetime.fromisoformat(first), datetime.fromisoformat(last)
    return float(later / (last - first).total_seconds())


def wait_drained(engine: Any, every: float) -> None:
    """Until nothing is pending in the inbox (polled every ``every`` seconds)."""
    while True:
        with engine.connect() as c:
            if not repo.has_pending(c):
                return
        time.sleep(every)


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def bench_backend(kind: str, pg_url: str, n: int, tmp: Path, paced: float) -> None:
    print(f"\n== {kind}")
    settings = fresh_database(kind, pg_url, tmp)
    engine = make_engine(settings.resolved_database_url)
    with transaction(engine) as conn:
        sources.add_source(conn, source_id="bench_his", name="bench", kind="hospital",
                           channels=["mllp", "file"], formats=["hl7v2"])
    floor = raw_insert_floor(settings)
    print(f"floor: raw committed single-row inserts {floor:,.0f}/s")
    listener = Listener(settings)
    try:
        # 1. ACK latency: one sender, nothing else running.
        lat_msgs = messages(min(n, 1000), "bench_his")
        secs, rtts = send(listener.port, lat_msgs, 1)
        print(f"MLLP ACK round trip, 1 sender, {len(rtts)} msgs: median "
              f"{1000 * statistics.median(rtts):.2f} ms, p95 {1000 * pct(rtts, 0.95):.2f} ms "
              f"(target p95 ≤ 10 ms); {len(rtts) / secs:,.0f} msgs/s")
        # 2. Intake with 8 senders (group commit), no worker.
        more = messages(n + len(lat_msgs), "bench_his")[len(lat_msgs):]
        secs, rtts = send(listener.port, more, 8)
        print(f"MLLP intake, 8 senders, {len(more)} msgs: {len(more) / secs:,.0f} msgs/s, "
              f"ACK median {1000 * statistics.median(rtts):.1f} ms, "
              f"p95 {1000 * pct(rtts, 0.95):.1f} ms")
        # 3. Processing what is in the inbox with workers: MLLP → stored FHIR.
        workers = 1 if settings.is_sqlite else 2
        total = len(lat_msgs) + len(more)
        t0 = time.perf_counter()
        procs = start_workers(settings, workers)
        try:
            wait_drained(engine, 0.1)
        finally:
            stop_workers(procs)
        secs = secs_stored = time.perf_counter() - t0
        with engine.connect() as c:
            res = repo.stored_resources(c)
            counts = repo.inbox_counts(c)
            steady = steady_rate(c)
        print(f"inbox → stored FHIR, {workers} worker(s): {total} msgs in {secs:.1f} s = "
              f"{total / secs:,.0f} msgs/s, {res / secs:,.0f} resources/s (+1 Provenance "
              f"each), statuses {counts} (target ≥ 1,000 msgs/s on PostgreSQL); "
              f"without the workers' start-up: {steady:,.0f} msgs/s (first to last commit)")
        # 4. End to end, both at once: MLLP senders while workers run.  8 senders, as for
        # intake: MLLP has one message in flight a connection, so 4 connections at ~8 ms an
        # ACK could never deliver 1,000 msgs/s (a national hub has dozens of sources).
        live = messages(2 * n + len(lat_msgs), "bench_his")[n + len(lat_msgs):]
        procs = start_workers(settings, workers)
        t0 = time.perf_counter()
        try:
            send_secs, rtts = send(listener.port, live, 8)
            wait_drained(engine, 0.2)
        finally:
            stop_workers(procs)
        secs = time.perf_counter() - t0
        print(f"MLLP → stored FHIR live, 8 senders + {workers} worker(s): {len(live)} msgs "
              f"in {secs:.1f} s = {len(live) / secs:,.0f} msgs/s; ACK median "
              f"{1000 * statistics.median(rtts):.1f} ms, p95 {1000 * pct(rtts, 0.95):.1f} ms "
              f"while workers write; the senders were done after {send_secs:.1f} s")
        # 5. ACK latency under a steady load below saturation, workers storing meanwhile.
        # With 8 senders each waiting for its ACK before the next message (4.), the ACK
        # time is the number in flight over the throughput (Little's law: 8 / 1,000 msgs/s
        # = 8 ms) whatever the listener does; feeds arrive at their own pace instead.
        paced_msgs = messages(2 * n + len(lat_msgs) + n // 2, "bench_his")[2 * n + len(lat_msgs):]
        paced = min(paced, total / secs_stored / 2)  # below what the workers can store
        procs = start_workers(settings, workers)
        try:
            time.sleep(1.0)  # the workers' start-up, not part of the load
            send_secs, rtts = send(listener.port, paced_msgs, 8, paced)
            wait_drained(engine, 0.2)
        finally:
            stop_workers(procs)
        print(f"MLLP ACK under a steady load, 8 senders offering {paced:,.0f} msgs/s together "
              f"with {workers} worker(s) storing: {len(paced_msgs)} msgs at "
              f"{len(paced_msgs) / send_secs:,.0f} msgs/s, ACK median "
              f"{1000 * statistics.median(rtts):.1f} ms, p95 {1000 * pct(rtts, 0.95):.1f} ms "
              "(target p95 ≤ 10 ms)")
        # 6. The REST and file channels' intake (no worker), on a generated nation's feeds.
        bench_rest_and_files(settings, engine, nation_dir(2000, tmp))
    finally:
        listener.stop()
        engine.dispose()


def nation_dir(people: int, tmp: Path) -> Path:
    nation = tmp / f"nation-{people}"
    if not nation.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "usmis", "synth", "--people", str(people),
                        "--seed", "1", "--out", str(nation), "--quiet"], check=True,
                       capture_output=True)
        print(f"\nnation of {people} people generated in {time.perf_counter() - t0:.1f} s")
    return nation


def bench_rest_and_files(settings: Settings, engine: Any, nation: Path) -> None:
    import httpx

    srcs = {s.id: s for s in read_nation(nation)}
    tokens, _ = register_nation(engine, list(srcs.values()))
    lines = [ln for ln in srcs["ehr_kmis"].files[0].read_bytes().split(b"\n") if ln.strip()]
    half = len(lines) // 2
    headers = {"Authorization": f"Bearer {tokens['ehr_kmis']}"}
    ndjson = {**headers, "Content-Type": "application/fhir+ndjson"}
    with rest_server(settings, engine) as url:
        def post(items: list[tuple[bytes, dict[str, str]]]) -> None:
            with httpx.Client(base_url=url, timeout=120) as client:
                for body, h in items:
                    r = client.post("/ingest/fhir", content=body, headers=h)
                    assert r.status_code == 202, r.text[:300]

        for what, bodies in (
            ("a Bundle a post", [(ln, headers) for ln in lines[:half]]),
            ("NDJSON bodies of 200", [(b"\n".join(lines[i:i + 200]), ndjson)
                                      for i in range(half, len(lines), 200)]),
        ):
            n = sum(b.count(b"\n") + 1 for b, _ in bodies)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(post, [bodies[i::4] for i in range(4)]))
            secs = time.perf_counter() - t0
            print(f"REST intake, 4 clients, {what}: {n} msgs (EHR transaction Bundles, "
                  f"{sum(len(b) for b, _ in bodies) / n / 1024:.1f} KiB each) in {secs:.1f} s "
                  f"= {n / secs:,.0f} msgs/s")
    with engine.connect() as c:
        registered = {s.id: s for s in repo.list_sources(c)}
    for sid in ("fund_claims_outpatient", "reg_population"):
        path = srcs[sid].files[0]
        t0 = time.perf_counter()
        rec = load_file(engine, settings, registered[sid], path)
        secs = time.perf_counter() - t0
        print(f"file intake, {path.name}: {rec.records} rows in {secs:.1f} s = "
              f"{rec.records / secs:,.0f} rows/s")


class ProgressLines:
    """ingest_nation's progress as one plain line a minute: done/total and rate per task."""

    def __init__(self, every: float = 60.0) -> None:
        self.every, self.started, self.last = every, time.monotonic(), time.monotonic()
        self.done: dict[str, int] = {}
        self.total: dict[str, int] = {}

    def __call__(self, task: str, advance: int, total: int | None) -> None:
        if total is not None:
            self.total[task] = total
        self.done[task] = self.done.get(task, 0) + advance
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            secs = now - self.started
            print(f"  {secs:6.0f} s  " + "; ".join(
                f"{t} {n:,}/{self.total.get(t, 0):,} ({n / secs:,.0f}/s)"
                for t, n in self.done.items()) + f"; load {os.getloadavg()[0]:.1f}",
                flush=True)


def bench_nation(kind: str, pg_url: str, people: int, tmp: Path) -> None:
    nation = nation_dir(people, tmp)
    settings = fresh_database(kind, pg_url, tmp)
    report = ingest_nation(settings, nation, progress=ProgressLines())
    print(f"== nation end to end on {kind}: {report.resources:,} resources in "
          f"{report.seconds:.1f} s = {report.resources_per_second:,.0f} resources/s with "
          f"{report.workers} worker(s); delivered {report.delivered}; inbox {report.inbox} "
          "(target ≥ 1,500 resources/s)")
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as c:
        rec = reconcile(c, nation)
    engine.dispose()
    print(f"reconciled against the ground truth: {'ok' if rec['ok'] else 'NOT OK'}"
          + "".join(f"\n  {p}" for p in rec["problems"][:20]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10_000,
                    help="messages a phase; fewer make the workers' start-up a large part "
                    "of the inbox → stored phase")
    ap.add_argument("--nation-people", type=int, default=2000)
    ap.add_argument("--paced-rate", type=float, default=500.0,
                    help="msgs/s the senders offer together in the ACK-under-load phase")
    ap.add_argument("--postgres", default=os.environ.get(
        "USMIS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--skip-nation", action="store_true")
    ap.add_argument("--nation-only", action="store_true")
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"workload: {args.messages} HL7 v2.5 messages per phase (half ADT^A01 + DG1 → "
          "Patient, Encounter, Condition; half ORU^R01 with 3 OBX → Patient, "
          "DiagnosticReport, 3 Observation), each stored with a Provenance, encrypted, "
          f"indexed, linked by the patient index; nation: {args.nation_people} people")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        try:
            for kind in args.backends.split(","):
                if not args.nation_only:
                    bench_backend(kind, args.postgres, args.messages, tmp, args.paced_rate)
                if not args.skip_nation:
                    bench_nation(kind, args.postgres, args.nation_people, tmp)
        finally:
            drop_databases(args.postgres)
        print(f"\nmachine at the end: {machine()}")


if __name__ == "__main__":
    main()
