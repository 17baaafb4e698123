"""Process-wide settings for the long-running processes (API server, ingest workers)."""

from __future__ import annotations

import gc


def quiet_gc() -> None:
    """Fewer cyclic garbage collections, for a process that allocates short-lived objects
    by the million (mapped resources, index rows, request bodies), nearly all of them freed
    by reference counting.  With Python's default threshold (a young collection every 700
    allocations) collecting was 8 % of an ingest worker's CPU in a native profile.

    What exists when this is called (modules, table metadata, compiled statements) is frozen
    out of every later collection, and a young collection runs every 50,000 allocations:
    cycles are still collected, only later.  Call it once the process has started up, in
    that process only (not in a test run's shared process)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
