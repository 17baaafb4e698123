"""Done means: SIGKILL the MLLP listener and the worker at random moments (≥ 5 times each)
while a nation is delivered, restart them, and find nothing lost and nothing duplicated.

Both run as real processes through the ``usmis`` CLI; the sender is at-least-once (it
re-sends what was not acknowledged), the inbox deduplicates, and a worker's batch commits
whole or not at all.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from usmis.config import Settings
from usmis.ingest import repository as repo
from usmis.ingest.channels.files import load_file
from usmis.ingest.channels.mllp import MllpSender
from usmis.ingest.mapping import hl7v2
from usmis.ingest.reconcile import duplicates, reconcile
from usmis.ingest.service import _free_port, read_nation, register_nation, worker_env
from usmis.ingest.workers import run_worker

from .test_nation import make_nation


@pytest.fixture(scope="module")
def crash_nation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_nation(tmp_path_factory.mktemp("crash") / "n", people=20, seed=23)


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("listener did not come up")


@pytest.mark.slow
def test_sigkill_listener_and_worker_loses_and_duplicates_nothing(
    crash_nation: Path, settings: Settings, engine: Engine
) -> None:
    nation = read_nation(crash_nation)
    register_nation(engine, nation)
    env = worker_env(settings)
    port = _free_port()
    usmis = [sys.executable, "-m", "usmis"]
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str) -> None:
        cmd = (usmis + ["mllp", "serve", "--port", str(port)] if name == "listener"
               else usmis + ["ingest-worker", "--batch", "10"])  # batches end mid-work
        procs[name] = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)

    start("listener")
    start("worker")
    _wait_port(port)

    # Extracts and FHIR bundle files go in through the file channel during the storm, a
    # few before each of the worker's kills, which waits until the worker is through part
    # of them; HL7 goes over MLLP, paced so that the sending lasts through the listener's.
    with engine.connect() as conn:
        srcs = {s.id: s for s in repo.list_sources(conn)}
    extracts = [(srcs[s.id], f) for s in nation if s.channel != "mllp" for f in s.files]

    def processed() -> tuple[bool, int]:
        with engine.connect() as conn:
            counts = repo.inbox_counts(conn)
        return counts.get("pending", 0) > 0, counts.get("done", 0) + counts.get("dead", 0)

    def worker_busy() -> bool:
        """Give the worker work, wait till it has done some of it: is some still left?"""
        rows = 0
        while extracts and rows < 40:
            rows += load_file(engine, settings, *extracts.pop(0)).records
        pending, before = processed()
        until = time.monotonic() + 20
        while pending and time.monotonic() < until:
            pending, now = processed()
            if now > before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))
        return processed()[0]

    sent = {"n": 0}
    failure: list[BaseException] = []

    def send_all() -> None:
        try:
            sender = MllpSender("127.0.0.1", port, timeout=10, retries=400)
            for s in nation:
                if s.channel == "mllp":
                    for f in s.files:
                        for msg in hl7v2.split_messages(f.read_bytes()):
                            sender.send(msg)
                            sent["n"] += 1
                            time.sleep(0.3)
            sender.close()
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    rng = random.Random(4)
    sender = threading.Thread(target=send_all)
    sender.start()
    kills = {"listener": 0, "worker": 0}
    mid_work = {"listener": 0, "worker": 0}  # kills while it had work
    victim = "worker"
    deadline = time.monotonic() + 180
    try:
        while (sender.is_alive() or extracts or min(kills.values()) < 5) \
                and time.monotonic() < deadline:
            victim = "listener" if victim == "worker" else "worker"
            if victim == "listener":
                time.sleep(rng.uniform(0.2, 0.8))
                busy = sender.is_alive()
            else:
                busy = worker_busy()
            os.kill(procs[victim].pid, signal.SIGKILL)
            procs[victim].wait()
            kills[victim] += 1
            mid_work[victim] += busy
            start(victim)
            if victim == "listener":
                _wait_port(port)
        sender.join()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    assert not failure, failure
    assert min(mid_work.values()) >= 5, (kills, mid_work)
    assert sent["n"] > 0
    # What the killed workers left pending is processed by a fresh one.
    run_worker(settings, until_empty=True)
    with engine.connect() as conn:
        result = reconcile(conn, crash_nation)
        assert result["ok"], result["problems"]
        assert duplicates(conn) == 0
