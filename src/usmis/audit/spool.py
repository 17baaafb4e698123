"""Write-behind for the audit entries of reads: journaled before the answer leaves, in the
hash chain a few milliseconds later.

Why: on PostgreSQL an audited read paid one round trip to append its entry and a durable
commit (a WAL flush) for a transaction that otherwise writes nothing — together about a
quarter of a read (issue 6's benchmark, ``bench/bench_access.py``).  Writes are unchanged:
their entries commit in the same transaction as the work they record.

What holds:

- ``submit`` writes the entry to this process's spool file (one ``write(2)`` on an
  ``O_APPEND`` file, mode 600, under ``data_dir/audit-spool``) before the request answers.
  If that write fails, the request fails: no answer without its record.
- A background thread appends what was spooled to the chain in batches, one transaction
  each; the same transaction moves the file's mark (``audit_spool``: byte offset reached).
- The file outlives the process, SIGKILL included.  Each live process holds an exclusive
  ``flock`` on its file; a file nobody holds belongs to a dead process and is replayed
  from its mark by the next process that opens a spool on this data directory — nothing
  lost, nothing appended twice.
- What an OS crash or a power cut can take: entries written within the last seconds that
  the kernel had not yet put on disk (the trade SQLite's ``synchronous=NORMAL`` makes
  for the embedded store).  ``USMIS_AUDIT_SPOOL=false`` puts reads back in the work's
  transaction, at the price measured by the benchmark.
- An entry reaches the chain (and the patient's access log) within
  ``audit_spool_interval_ms`` plus one commit; readers of the log in this process call
  :meth:`AuditSpool.drain` first, so they see their own process's reads.

Entries hold what the chain holds (opaque ids, never names or IINs).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from usmis.audit import repository as repo
from usmis.audit import service as audit
from usmis.audit.model import AuditRecord, content_of
from usmis.config import Settings
from usmis.kit.db import unit_of_work
from usmis.kit.logging import get_logger

log = get_logger(__name__)

BATCH = 500  # entries per transaction
ROTATE_BYTES = 4 << 20  # a fully drained file larger than this is replaced by a new one


class AuditSpool:
    """One per process (made by ``create_app`` when audit and the spool are on)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.directory = spool_dir(settings)
        self.interval = settings.audit_spool_interval_ms / 1000
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: list[tuple[dict[str, Any], int]] = []  # (content, file offset after it)
        self._hurry = threading.Event()  # someone waits: flush without gathering more
        self._thread: threading.Thread | None = None
        self._closed = False
        self._fd, self.name = -1, ""  # opened at the first entry
        self._size = 0
        recover(engine, settings)

    # ------------------------------------------------------------------ requests
    def submit(self, record: AuditRecord) -> None:
        """Journal one entry; it reaches the chain in the background."""
        content = content_of(record, audit.now_iso())
        line = orjson.dumps(content) + b"\n"
        with self._lock:
            if self._closed:
                raise RuntimeError("the audit spool is closed")
            if self._fd < 0:
                self._fd, self.name = _open_new(self.directory)
            _write_all(self._fd, line)
            self._size += len(line)
            self._pending.append((content, self._size))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-spool",
                                                daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is in the chain; False on timeout."""
        deadline = time.monotonic() + timeout
        self._hurry.set()
        with self._lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Drain, stop the thread, and remove the file if all of it is in the chain (else
        it stays for the next process to replay)."""
        drained = self.drain(timeout)
        with self._lock:
            self._closed = True
            self._changed.notify_all()
        self._hurry.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._fd < 0:
            return
        if drained:
            self._retire(self._fd, self.name)
        else:
            os.close(self._fd)
            log.warning("audit spool closed with entries not yet in the chain; the next "
                        "start replays them", spool=self.name)

    # ------------------------------------------------------------------ background
    def _run(self) -> None:
        failures = 0
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if not self._pending:
                    return
                closing = self._closed
            if not closing:
                self._hurry.wait(self.interval)  # gather a batch: one commit for many reads
            with self._lock:
                batch, name = self._pending[:BATCH], self.name
                self._hurry.clear()
            try:
                with unit_of_work(self.engine, write=True) as conn:
                    audit.append_many(conn, self.settings, [c for c, _ in batch],
                                      (name, batch[-1][1]))
            except Exception as exc:  # the database is away: keep the entries, retry
                failures += 1
                log.error("audit spool could not append to the chain; retrying",
                          error=type(exc).__name__, pending=len(self._pending))
                if closing:
                    return
                time.sleep(min(5.0, 0.05 * 2 ** min(failures, 7)))
                continue
            failures = 0
            with self._lock:
                del self._pending[: len(batch)]
                old_fd, old_name = -1, ""
                if not self._pending and self._size > ROTATE_BYTES and not self._closed:
                    # Fully drained and large: the next entry starts a new file.
                    old_fd, old_name = self._fd, self.name
                    self._fd, self.name, self._size = -1, "", 0
                self._changed.notify_all()
            if old_fd >= 0:
                self._retire(old_fd, old_name)

    def _retire(self, fd: int, name: str) -> None:
        """A file whose entries are all in the chain: delete it, then its mark."""
        try:
            (self.directory / name).unlink(missing_ok=True)
            with unit_of_work(self.engine, write=True) as conn:
                repo.drop_spool(conn, name)
        except Exception as exc:  # a stale mark of a deleted file harms nothing
            log.warning("audit spool: could not drop a retired file's mark",
                        error=type(exc).__name__)
        finally:
            os.close(fd)


def spool_dir(settings: Settings) -> Path:
    path = settings.data_dir / "audit-spool"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def recover(engine: Engine, settings: Settings) -> int:
    """Replay every spool file no live process holds; the number of entries appended."""
    total = 0
    for path in sorted(spool_dir(settings).glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # another process replayed it meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive
            if os.fstat(fd).st_nlink == 0:
                continue  # replayed and deleted while we waited for the lock
            total += _replay(engine, settings, path, fd)
        finally:
            os.close(fd)
    return total


def _replay(engine: Engine, settings: Settings, path: Path, fd: int) -> int:
    with engine.connect() as conn:
        offset = repo.spool_offset(conn, path.name)
    os.lseek(fd, offset, os.SEEK_SET)
    with os.fdopen(os.dup(fd), "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    if lines[-1]:
        # A torn last line: the machine stopped mid-write (a process crash cannot do this).
        log.warning("audit spool: dropped a torn last entry", spool=path.name)
    batch: list[dict[str, Any]] = []
    position = offset
    count = 0
    for line in lines[:-1]:
        position += len(line) + 1
        batch.append(json.loads(line))
        if len(batch) == BATCH:
            count += _append(engine, settings, path.name, batch, position)
            batch = []
    if batch:
        count += _append(engine, settings, path.name, batch, position)
    path.unlink()
    with unit_of_work(engine, write=True) as conn:
        repo.drop_spool(conn, path.name)
    if count:
        log.info("audit spool replayed", spool=path.name, entries=count)
    return count


def _append(engine: Engine, settings: Settings, name: str, contents: list[dict[str, Any]],
            offset: int) -> int:
    with unit_of_work(engine, write=True) as conn:
        audit.append_many(conn, settings, contents, (name, offset))
    return len(contents)


def _open_new(directory: Path) -> tuple[int, str]:
    name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd, name


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
