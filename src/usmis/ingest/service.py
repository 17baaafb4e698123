"""What the ingest domain does for callers: load a file or a folder for one source, and
load a whole synthetic nation with every source through its own channel.

``ingest_nation`` is what ``usmis ingest NATION_DIR`` and the demo run:

1. register every source of ``sources.json`` (REST sources get an API token, MLLP sources
   an allow-list of 127.0.0.1);
2. start the real channels for the run: the asyncio MLLP listener and an HTTP server with
   the REST channel, plus worker processes (``usmis ingest-worker``; 2 on PostgreSQL,
   1 on SQLite);
3. deliver: HL7 files message by message through MLLP (several connections), FHIR bundle
   files as HTTP posts with the source's token (NDJSON bodies of ``REST_CHUNK`` lines, each
   line its own inbox message), extracts through the file channel;
4. wait until the inbox is drained, stop the workers and report.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from usmis.config import Settings
from usmis.ingest import repository as repo
from usmis.ingest import sources
from usmis.ingest.channels.files import FileReceipt, load_file
from usmis.ingest.channels.mllp import MllpSender, MllpServer, ack_code
from usmis.ingest.mapping import hl7v2
from usmis.ingest.pipeline import BatchResult, Pipeline
from usmis.kit.db import make_engine, transaction, upgrade
from usmis.kit.logging import get_logger

log = get_logger("usmis.ingest.service")

Progress = Callable[[str, int, int | None], None]  # (task, advance, total)
# Lines of an NDJSON feed per REST post. One post a line cost the channels' process ~1.7 ms
# of CPU a message (HTTP, the thread-pool hop, a commit each); 200 lines keep a body ~1 MB.
REST_CHUNK = 200


# --- for the patient index ------------------------------------------------------------------


def list_merges(conn: Any, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    """A40 merges recorded by ingest, oldest first: ``{id, source_id, survivor_patient,
    merged_patient, event_time}`` (FHIR Patient ids).  The patient index polls this with
    the last id it has honoured."""
    return [{str(k): v for k, v in r._mapping.items() if k not in {"inbox_id", "created_at"}}
            for r in repo.list_merges(conn, after_id, limit)]


# --- one source ------------------------------------------------------------------------------


def ingest_path(
    settings: Settings, path: Path, source_id: str, *, process: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Load a file, or every file of a folder, for one registered source; then process."""
    engine = make_engine(settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            src = sources.usable(conn, source_id, "file")
        paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        receipts: list[FileReceipt] = []
        for p in paths:
            def tick(n: int, p: Path = p) -> None:
                if progress:
                    progress("records", n, None)
            receipts.append(load_file(engine, settings, src, p, on_progress=tick))
        result = BatchResult()
        if process:
            def on_batch(r: BatchResult) -> None:
                if progress:
                    progress("processed", r.claimed, None)
            result = Pipeline(settings, engine).drain(on_batch=on_batch)
        return {
            "source": source_id,
            "files": len(receipts),
            "records": sum(r.records for r in receipts),
            "new": sum(r.new for r in receipts),
            "processed": result.claimed,
            "stored": result.done,
            "dead_letters": result.dead,
            "resources": result.resources,
            "reasons": result.reasons,
        }
    finally:
        engine.dispose()


# --- a whole nation --------------------------------------------------------------------------


@dataclass
class NationSource:
    id: str
    name: str
    kind: str
    channel: str  # mllp | fhir | file
    format: str
    files: list[Path]


@dataclass
class NationReport:
    sources: int = 0
    delivered: dict[str, int] = field(default_factory=dict)  # by channel
    acks: dict[str, int] = field(default_factory=dict)  # MLLP MSA-1 codes
    rest_status: dict[str, int] = field(default_factory=dict)
    inbox: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)  # source → rule → n
    resources: int = 0
    seconds: float = 0.0
    resources_per_second: float = 0.0
    workers: int = 0
    disabled: list[str] = field(default_factory=list)  # registered but disabled: not sent

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def read_nation(nation_dir: Path) -> list[NationSource]:
    doc = orjson.loads((nation_dir / "sources.json").read_bytes())
    items = doc.get("sources", doc) if isinstance(doc, dict) else doc
    out = []
    for s in items:
        out.append(NationSource(
            id=s["id"], name=s.get("name", s["id"]), kind=s.get("kind", "other"),
            channel=s.get("channel", "file"), format=s.get("format", "csv"),
            files=[nation_dir / f for f in s.get("files", [])],
        ))
    return out


def register_nation(engine: Engine, nation: list[NationSource]
                    ) -> tuple[dict[str, str], set[str]]:
    """Register the nation's sources that are not registered yet; returns the REST tokens
    of the FHIR sources and the ids of those that are registered but disabled.

    A source registered before keeps its registration as it is — enabled or not, its MLLP
    peers, secret and certificate, its mapping — except that a FHIR source gets a new REST
    token (the loader posts as that source and cannot know the old one): so load a
    synthetic nation only into a database whose sources of those ids are synthetic too.
    A disabled source's records are not delivered."""
    tokens: dict[str, str] = {}
    disabled: set[str] = set()
    with transaction(engine) as conn:
        for s in nation:
            known = repo.get_source(conn, s.id)
            if known is not None:
                if not known.enabled:
                    disabled.add(s.id)
                elif "rest" in known.channels:
                    tokens[s.id] = sources.reissue_token(conn, s.id)
                continue
            if s.channel == "mllp":
                channels, formats = ["mllp", "file"], ["hl7v2"]
            elif s.channel == "fhir":
                channels, formats = ["rest", "file"], ["fhir"]
            else:
                channels = ["file"]
                formats = [s.format if s.format in {"csv", "tsv", "json", "ndjson"} else "csv"]
            creds = sources.add_source(conn, source_id=s.id, name=s.name, kind=s.kind,
                                       channels=channels, formats=formats)
            if creds.token:
                tokens[s.id] = creds.token
    return tokens, disabled


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mllp_listener(settings: Settings, engine: Engine) -> Iterator[MllpServer]:
    """A real MLLP listener on a free port, served from a background event loop."""
    loop = asyncio.new_event_loop()
    server = MllpServer(settings, engine, host="127.0.0.1", port=0)
    thread = threading.Thread(target=loop.run_forever, name="mllp", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@contextmanager
def rest_server(settings: Settings, engine: Engine) -> Iterator[str]:
    """The REST channel served by uvicorn on a free port for the run; yields its base URL."""
    import uvicorn
    from fastapi import FastAPI

    from usmis.ingest.endpoints import router
    from usmis.kit.errors import UsmisError

    app = FastAPI(title="USMIS ingest")
    app.state.settings = settings
    app.state.engine = engine
    app.include_router(router)

    @app.exception_handler(UsmisError)
    async def _err(_r: Any, exc: UsmisError) -> Any:
        from fastapi.responses import Response

        body = {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": exc.code, "diagnostics": exc.message}]}
        return Response(orjson.dumps(body), status_code=exc.status,
                        media_type="application/fhir+json")

    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="rest", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["USMIS_DATABASE_URL"] = settings.resolved_database_url
    env["USMIS_DATA_DIR"] = str(settings.data_dir.resolve())
    env["USMIS_KEY_FILE"] = str(settings.resolved_key_file.resolve())
    return env


def start_workers(settings: Settings, n: int, *, batch: int = 0) -> list[subprocess.Popen[bytes]]:
    """``n`` worker processes (``python -m usmis ingest-worker``)."""
    cmd = [sys.executable, "-m", "usmis", "ingest-worker", "--batch", str(batch),
           "--exit-with-parent"]
    return [subprocess.Popen(cmd, env=worker_env(settings), stdout=subprocess.DEVNULL)
            for _ in range(n)]


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def send_hl7_files(port: int, files: list[Path], report: NationReport,
                   lock: threading.Lock, progress: Progress | None) -> None:
    """One MLLP connection sends these files in order, message by message."""
    sender = MllpSender("127.0.0.1", port)
    try:
        for f in files:
            for msg in hl7v2.split_messages(f.read_bytes()):
                code = ack_code(sender.send(msg))
                with lock:
                    report.acks[code] = report.acks.get(code, 0) + 1
                    report.delivered["mllp"] = report.delivered.get("mllp", 0) + 1
                if progress:
                    progress("delivered", 1, None)
    finally:
        sender.close()


def post_fhir_files(base_url: str, token: str, files: list[Path], report: NationReport,
                    lock: threading.Lock, progress: Progress | None,
                    chunk: int = REST_CHUNK) -> None:
    """Post a source's files to the REST channel: a JSON file as it is, an NDJSON file in
    NDJSON bodies of up to ``chunk`` lines (each line its own inbox message)."""
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one log line per post
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client:
        for f in files:
            data = f.read_bytes()
            if f.suffix in {".ndjson", ".jsonl"}:
                lines = [ln for ln in data.split(b"\n") if ln.strip()]
                # one body at a time: a feed of a large nation is hundreds of MB
                bodies: Iterable[tuple[bytes, int, str]] = (
                    (b"\n".join(lines[i:i + chunk]), len(lines[i:i + chunk]),
                     "application/fhir+ndjson") for i in range(0, len(lines), chunk))
            else:
                bodies = [(data, 1, "application/fhir+json")]
            for body, n, ctype in bodies:
                for attempt in range(20):
                    try:
                        r = client.post("/ingest/fhir", content=body,
                                        headers={"Content-Type": ctype})
                        break
                    except httpx.TransportError:
                        time.sleep(0.1 * (attempt + 1))
                else:
                    raise ConnectionError("REST channel unreachable")
                with lock:
                    k = str(r.status_code)
                    report.rest_status[k] = report.rest_status.get(k, 0) + 1
                    report.delivered["rest"] = report.delivered.get("rest", 0) + n
                if progress:
                    progress("delivered", n, None)


def count_records(nation: list[NationSource]) -> int:
    """How many records the nation's files hold (for the progress bar's total)."""
    n = 0
    for s in nation:
        for f in s.files:
            data = f.read_bytes()
            if s.channel == "mllp":
                n += data.count(b"\x1c\r")
            else:
                n += sum(1 for ln in data.split(b"\n") if ln.strip())
                if s.format in {"csv", "tsv"}:
                    n -= 1
    return n


def ingest_nation(
    settings: Settings, nation_dir: Path, *, workers: int | None = None,
    progress: Progress | None = None, senders: int = 4,
) -> NationReport:
    """Load a synthetic nation end to end through the real channels; see module docstring."""
    settings.ensure_data_dir()
    upgrade(settings.resolved_database_url)
    started = time.monotonic()
    nation = read_nation(nation_dir)
    engine = make_engine(settings.resolved_database_url)
    report = NationReport(sources=len(nation))
    lock = threading.Lock()
    n_workers = workers or (1 if settings.is_sqlite else 2)
    report.workers = n_workers
    try:
        tokens, disabled = register_nation(engine, nation)
        report.disabled = sorted(disabled)
        nation = [s for s in nation if s.id not in disabled]
        if progress:
            progress("delivered", 0, count_records(nation))
        procs = start_workers(settings, n_workers)
        try:
            with mllp_listener(settings, engine) as mllp, rest_server(settings, engine) as url:
                with ThreadPoolExecutor(max_workers=senders + 2) as pool:
                    futures = []
                    hl7 = [s for s in nation if s.channel == "mllp"]
                    for i in range(senders):
                        files = [f for s in hl7[i::senders] for f in s.files]
                        if files:
                            futures.append(pool.submit(send_hl7_files, mllp.port, files,
                                                       report, lock, progress))
                    rest = [s for s in nation if s.channel == "fhir"]
                    for s in rest:
                        futures.append(pool.submit(post_fhir_files, url, tokens[s.id], s.files,
                                                   report, lock, progress))
                    # Extracts go through the file channel, in this thread, meanwhile.
                    with engine.connect() as conn:
                        srcs = {s.id: s for s in repo.list_sources(conn)}
                    for s in nation:
                        if s.channel not in {"mllp", "fhir"}:
                            for f in s.files:
                                rec = load_file(engine, settings, srcs[s.id], f, on_progress=(
                                    (lambda n: progress("delivered", n, None)) if progress
                                    else None))
                                report.delivered["file"] = report.delivered.get(
                                    "file", 0) + rec.records
                    for fut in futures:
                        fut.result()
            _wait_drained(engine, procs, progress)
        finally:
            stop_workers(procs)
        with engine.connect() as conn:
            report.inbox = repo.inbox_counts(conn)
            for row in repo.dead_letter_summary(conn):
                src, rule, _fld, n = tuple(row)
                report.dead_letters.setdefault(src, {})
                report.dead_letters[src][rule] = report.dead_letters[src].get(rule, 0) + int(n)
            report.resources = repo.stored_resources(conn)
    finally:
        engine.dispose()
    report.seconds = round(time.monotonic() - started, 2)
    report.resources_per_second = round(report.resources / report.seconds, 1) \
        if report.seconds else 0.0
    return report


def _wait_drained(engine: Engine, procs: list[subprocess.Popen[bytes]],
                  progress: Progress | None) -> None:
    # One count by status, then only the pending ones, and not more often than keeps the
    # counting under a tenth of one core: counting the whole inbox every half second took
    # a quarter of a core at 20,000 people (~460,000 messages, 120 ms a count).
    with engine.connect() as conn:
        counts = repo.inbox_counts(conn)
    pending = counts.get("pending", 0)
    if progress:
        processed = counts.get("done", 0) + counts.get("dead", 0)
        progress("processed", 0, pending + processed)
        progress("processed", processed, None)
    took = 0.0
    while pending:
        if all(p.poll() is not None for p in procs):
            raise RuntimeError("every ingest worker has exited with messages still pending")
        time.sleep(max(0.5, 10 * took))
        started = time.monotonic()
        with engine.connect() as conn:
            now = repo.pending_count(conn)
        took = time.monotonic() - started
        if progress:
            progress("processed", pending - now, None)
        pending = now
