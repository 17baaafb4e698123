"""Worker processes: pull pending messages from the inbox and run the pipeline.

On PostgreSQL any number of workers run in parallel (``FOR UPDATE SKIP LOCKED`` hands each
message to exactly one of them); on SQLite the database allows one writer, so workers take
turns (``BEGIN IMMEDIATE``) — run one.  A worker killed at any moment loses nothing: its
open transaction rolls back and its messages are still pending for the next worker.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError

from usmis.config import Settings
from usmis.ingest.pipeline import BatchResult, Pipeline
from usmis.kit.db import make_engine
from usmis.kit.logging import get_logger

log = get_logger("usmis.ingest.worker")


def run_worker(
    settings: Settings,
    *,
    batch: int = 0,
    idle_sleep: float = 0.2,
    linger: float | None = None,
    until_empty: bool = False,
    stop: threading.Event | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    handle_signals: bool = False,
    exit_with_parent: bool = False,
) -> BatchResult:
    """Process batches until ``stop`` is set (or, with ``until_empty``, nothing is pending)."""
    stop = stop or threading.Event()
    parent = os.getppid()
    if handle_signals:
        # SIGTERM/SIGINT: finish the current batch, then leave.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    engine = make_engine(settings.resolved_database_url, pool_size=2)
    pipeline = Pipeline(settings, engine)
    # SQLite has one writer: short transactions keep the MLLP listener's inbox commits (and
    # so its ACKs) from waiting long behind a worker batch, and a short pause after each
    # lets a waiting writer in (SQLite's lock is not fair).
    sqlite = settings.is_sqlite
    # PostgreSQL: 100 a batch (each batch costs ~20 round trips whatever its size; 100 was
    # 5–10 % faster than 50 end to end, 200 no faster than 100).
    batch = batch or (5 if sqlite else 100)
    # After a claim that found fewer messages than it could take, wait ``linger`` seconds
    # for more before claiming again (PostgreSQL: 0.05).  While senders deliver, workers
    # that claimed as soon as they could took ~15 messages a batch and spent their time on
    # each batch's fixed cost; the wait adds at most that much to a message's way to the
    # store, and nothing while the inbox holds full batches.
    linger = (0.0 if sqlite else 0.05) if linger is None else linger
    total = BatchResult()
    failures = 0
    try:
        while not stop.is_set():
            if exit_with_parent and os.getppid() != parent:
                log.info("worker's parent is gone, leaving")
                break
            try:
                r = pipeline.run_batch(batch)
                failures = 0
            except DBAPIError as exc:
                # deadlock, serialisation failure, lost connection, "database is locked":
                # the batch rolled back; nothing is lost, try again shortly.
                failures += 1
                log.warning("worker batch rolled back", error=type(exc.orig).__name__,
                            attempt=failures)
                time.sleep(min(5.0, 0.1 * 2**failures))
                continue
            if r.busy:  # another worker holds these records: try again shortly
                time.sleep(0.01)
                continue
            total.claimed += r.claimed
            total.done += r.done
            total.dead += r.dead
            total.resources += r.resources
            for k, v in r.reasons.items():
                total.reasons[k] = total.reasons.get(k, 0) + v
            if r.claimed and on_batch is not None:
                on_batch(r)
            if sqlite:
                time.sleep(0.003)
            if not r.claimed:
                if until_empty:
                    break
                stop.wait(idle_sleep)
            elif r.short and linger:
                stop.wait(linger)
    finally:
        engine.dispose()
    return total
