"""A worker that took less than a full batch waits a moment for more (``linger``)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine

from usmis.config import Settings
from usmis.ingest import inbox
from usmis.ingest.model import Incoming
from usmis.ingest.pipeline import BatchResult
from usmis.ingest.workers import run_worker
from usmis.kit.db import transaction

from .factories import make_adt, make_iin


def _put(engine: Engine, settings: Settings, control: str) -> None:
    with transaction(engine) as conn:
        inbox.receive(conn, settings, Incoming(
            source_id="his-test", channel="mllp", format="hl7v2", message_id=control,
            raw=make_adt(iin=make_iin(), control=control).encode()))


def _batches(engine: Engine, settings: Settings, linger: float) -> list[int]:
    """Sizes of the batches a worker makes of one message, then two more arriving 0.3 s
    apart right after its first batch."""
    sizes: list[int] = []
    first = threading.Event()
    stop = threading.Event()

    def on_batch(r: BatchResult) -> None:
        sizes.append(r.claimed)
        first.set()

    worker = threading.Thread(target=run_worker, args=(settings,), kwargs={
        "batch": 10, "idle_sleep": 0.01, "linger": linger, "stop": stop, "on_batch": on_batch})
    _put(engine, settings, "L1")
    worker.start()
    try:
        assert first.wait(60)
        _put(engine, settings, "L2")
        time.sleep(0.3)
        _put(engine, settings, "L3")
        deadline = time.monotonic() + 60
        while sum(sizes) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join(60)
    return sizes


def test_a_lingering_worker_takes_what_arrives_meanwhile_in_one_batch(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    assert _batches(engine, settings, linger=1.5) == [1, 2]


def test_without_linger_the_worker_claims_as_soon_as_a_message_is_there(
    hl7_sources: dict[str, str], engine: Engine, settings: Settings
) -> None:
    assert _batches(engine, settings, linger=0.0) == [1, 1, 1]


def test_worker_processes_yield_the_cpu_to_the_channels(settings: Settings) -> None:
    """``usmis ingest-worker`` runs 10 nicer (its own option): a listener's ACK
    waits for no worker's time slice when the cores are busy."""
    import os

    from usmis.ingest.service import start_workers, stop_workers

    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)  # relative to ours
    procs = start_workers(settings, 1)
    try:
        deadline = time.monotonic() + 30
        while os.getpriority(os.PRIO_PROCESS, procs[0].pid) != expected:
            assert procs[0].poll() is None, "the worker exited"
            assert time.monotonic() < deadline, "the worker never lowered its priority"
            time.sleep(0.05)
    finally:
        stop_workers(procs)
