"""The worker side of the pipeline: inbox → parse → map → validate → store → identify → done.

One claimed batch is one database transaction: the resources, their Provenance, the
record clocks, the person links and the ``done``/``dead`` marks commit together, so a
worker killed at any moment leaves each message either untouched (pending, retried by the
next worker) or completely processed — never half, never twice.

A batch first runs without savepoints.  Should a message fail validation or storage, the
batch rolls back and runs again with each message in a savepoint: the failing message
rolls back alone, becomes a dead letter with the exact reason, and the batch goes on.
(Messages the mappers reject never reach storage: they are dead letters in either run.)

Locks, so that parallel workers (PostgreSQL) never deadlock on each other: every message
of a batch is mapped first, then the batch takes the conditional-key locks of all the
records it will write in one sorted order, before any write; the patient index's linking
lock is taken last, for all the batch's new Patients together, just before the commit.  A
batch holding the linking lock thus never waits for a lock another batch holds.  Should
linking fail in that last step (a bug, not a deadlock), the batch rolls back and runs again
with each message linked inside its own savepoint, so one message costs one dead letter.

Ordering: a record's newest state wins by *source* timestamp.  Before a conditional PUT
the record clock is advanced; if the clock already shows a later event, the entry is
turned into a conditional create (``ifNoneExist``) — it still resolves references but
does not overwrite the newer state.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Row
from sqlalchemy.exc import DBAPIError

from usmis.config import Settings
from usmis.fhir.context import SystemAccess
from usmis.fhir.repository import try_lock_keys
from usmis.fhir.service import FhirService, IndexBuffer, flush_index_buffer
from usmis.ingest import repository as repo
from usmis.ingest.mapping import fhir as fhir_mapping
from usmis.ingest.mapping import files, hl7v2
from usmis.ingest.mapping.common import Mapped, Reject, source_system, source_uri
from usmis.ingest.sealing import keys, record_key, unseal
from usmis.kit.db import unit_of_work
from usmis.kit.errors import UsmisError
from usmis.kit.logging import get_logger

log = get_logger("usmis.ingest.pipeline")

PROVENANCE_ACTIVITY = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"


@dataclass
class BatchResult:
    claimed: int = 0
    done: int = 0
    dead: int = 0
    resources: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    # Every claimed message names a record another worker's batch is writing: nothing was
    # done, the messages stay pending; try again shortly (the inbox is not empty).
    busy: bool = False
    # The claim found fewer pending messages than it could take (not: it left some that
    # name records another worker holds): the inbox had no more just then.
    short: bool = False


def _map_hl7(raw: bytes, row: Row[Any]) -> Mapped:
    return hl7v2.map_message(raw, row.source_id)


def _map_fhir(raw: bytes, row: Row[Any]) -> Mapped:
    return fhir_mapping.map_payload(raw, row.source_id)


FILE_FORMATS = {"csv", "tsv", "json", "ndjson"}


def _mpi_hook(name: str = "link_source_patient") -> Callable[..., Any] | None:
    """The patient index's linker (or its ``batched`` context), if that part is installed
    (docs/CONTRACTS.md)."""
    try:
        mod = importlib.import_module("usmis.mpi.service")
    except ImportError:
        return None
    fn = getattr(mod, name, None)
    return fn if callable(fn) else None


class Pipeline:
    """Processes claimed inbox messages.  One instance per worker process."""

    def __init__(self, settings: Settings, engine: Engine, *, link_persons: bool = True) -> None:
        self.settings = settings
        self.engine = engine
        self.keys = keys(settings)
        self.skip_locked = engine.dialect.name == "postgresql"
        self.link = _mpi_hook() if link_persons else None
        self.link_batch = _mpi_hook("batched") if link_persons else None
        self.link_unless = _mpi_hook("link_unless_linked") if link_persons else None
        self._headers: dict[int, list[str] | None] = {}
        self._mappings: dict[str, files.FileMapping] = {}
        self._held: frozenset[str] = frozenset()  # the batch's conditional-key locks
        # What the batch's conditional keys match, (type, criteria) → ids: looked up once
        # for the whole batch (under their locks), then kept true by adding what each
        # stored message wrote (see _learned) — the FHIR service asks here first.
        self._known: dict[tuple[str, str], list[str]] = {}
        # The record clocks of the batch's records, read once under their locks, and the
        # ones its stored messages moved (written together before the batch commits).
        self._clocks: dict[tuple[str, str], repo.Clock] = {}
        self._moved: dict[tuple[str, str], repo.Clock] = {}
        self._record_keys_of: dict[int, dict[int, str]] = {}  # by inbox id (keyed hashes)
        # The batch's stored Patients by id, each in the last version written — what the
        # database holds when the batch links them (after all its messages' writes).  A
        # message records them only once its transaction went through; one that fails
        # later (while linking, in the message-by-message rerun) is never linked from here.
        self._stored_patients: dict[str, dict[str, Any]] = {}
        # The batch's Patients that got a new version (the others were stored again as
        # they were: the store made no version, and linking them again would change nothing).
        self._changed_patients: set[str] = set()

    def map(self, conn: Connection, raw: bytes, row: Row[Any]) -> Mapped:
        """Parse and map one inbox message by its format (pure mappers do the work)."""
        if row.format == "hl7v2":
            return _map_hl7(raw, row)
        if row.format == "fhir":
            return _map_fhir(raw, row)
        if row.format in FILE_FORMATS:
            ctx = row.context or {}
            file_id = int(ctx.get("file_id", 0))
            if file_id not in self._headers:
                self._headers[file_id] = repo.file_header(conn, file_id)
            mapping = self._mapping(conn, row.source_id)
            return files.map_row(raw, self._headers[file_id], mapping, row.source_id)
        raise Reject("format", "message", f"unknown format '{row.format}'")

    def _mapping(self, conn: Connection, source_id: str) -> files.FileMapping:
        m = self._mappings.get(source_id)
        if m is None:
            src = repo.get_source(conn, source_id)
            m = files.load_mapping((src.mapping if src else None) or source_id, source_id)
            self._mappings[source_id] = m
        return m

    def run_batch(self, limit: int = 50) -> BatchResult:
        """Claim up to ``limit`` pending messages and process them in one transaction.

        First without a savepoint per message (two round trips a message saved): should a
        message fail to store, the batch rolls back and runs again with one savepoint per
        message, so that message alone becomes a dead letter."""
        try:
            try:
                return self._batch(limit, defer_links=True, isolate=False)
            except _StoreFailed:
                return self._batch(limit, defer_links=True, isolate=True)
        except _LinkFailed:
            log.warning("linking failed at the end of a batch; running it message by message")
            return self._batch(limit, defer_links=False, isolate=True)

    def _batch(self, limit: int, *, defer_links: bool, isolate: bool) -> BatchResult:
        result = BatchResult()
        with unit_of_work(self.engine, write=True) as conn:
            rows = repo.claim_pending(conn, limit, skip_locked=self.skip_locked)
            result.short = len(rows) < limit
            prepared = [(row, self._prepare(conn, row)) for row in rows]
            locks = {row.id: _record_locks(m, row.source_id)
                     for row, m in prepared if isinstance(m, Mapped)}
            held = sorted({k for ks in locks.values() for k in ks})
            # The records' locks, without waiting (outside any savepoint: held until the
            # batch commits).  A message whose record another worker's batch holds is
            # left pending for a later batch — waiting for it serialised the workers
            # (consecutive messages often name the same patient) — unless that is every
            # message of the batch: then the batch is tried again shortly.
            got = try_lock_keys(conn, held)
            if len(got) < len(held):
                prepared = [(row, m) for row, m in prepared if not isinstance(m, Mapped)
                            or got.issuperset(locks[row.id])]
                if not prepared:
                    result.busy = True
                    return result
                held = sorted({k for row, _ in prepared for k in locks.get(row.id, ())})
            result.claimed = len(prepared)
            self._held = frozenset(held)
            self._known = self._resolve(conn, held)
            self._record_keys_of = {row.id: self._record_keys(row, m)
                                    for row, m in prepared if isinstance(m, Mapped)}
            self._clocks = repo.read_clocks(conn, [
                (row.source_id, k) for row, m in prepared if isinstance(m, Mapped)
                for k in self._record_keys_of[row.id].values()])
            self._moved = {}
            self._stored_patients = {}
            self._changed_patients = set()
            done: list[tuple[int, int, str | None, datetime | None]] = []
            deferred: list[tuple[Row[Any], Mapped, list[str]]] | None = None
            # The index rows of the whole batch are written together at its end, unless a
            # message is about to look up something an earlier one wrote (see _reads_back).
            buf: IndexBuffer | None = None
            written: set[str] = set()
            if defer_links:
                deferred, buf = [], {}
            for row, m in prepared:
                if buf and isinstance(m, Mapped) and _reads_back(m, written):
                    flush_index_buffer(conn, self.keys, buf)
                    written.clear()
                stored = self._one(conn, row, m, result, done, deferred, buf, isolate)
                if stored and isinstance(m, Mapped) and _deletes(m):
                    # Known answers do not follow deletes: ask the database again.
                    if buf:
                        flush_index_buffer(conn, self.keys, buf)
                    written.clear()
                    self._known = self._resolve(conn, held)
                elif stored and buf is not None and isinstance(m, Mapped):
                    written.update(k for k in _conditional_keys(m)
                                   if tuple(k.split("?", 1)) not in self._known)
            if buf:
                flush_index_buffer(conn, self.keys, buf)
            repo.write_clocks(conn, self._moved)
            # The done marks of the batch in one statement, in the batch's own transaction:
            # they commit with the work or not at all, exactly as when set per message.
            repo.finish_messages(conn, done)
            if deferred:  # last: linking holds a lock other workers' linking waits for
                self._link_all(conn, deferred)
        return result

    def _resolve(self, conn: Connection, held: list[str]) -> dict[tuple[str, str], list[str]]:
        """What the batch's ``identifier=`` conditional keys match now, in one query."""
        pairs = [(k.split("?", 1)[0], k.split("?", 1)[1]) for k in held if "?" in k]
        return FhirService(conn, self.keys, SystemAccess()).resolve_ids(
            [p for p in pairs if p[1].startswith("identifier=")])

    def _link_all(self, conn: Connection, items: list[tuple[Row[Any], Mapped, list[str]]]
                  ) -> None:
        """Link the batch's stored Patients (and apply its merges), in message order.  No
        savepoint per message: any failure here rolls the whole batch back (run_batch then
        runs it message by message)."""
        linked: set[str] = set()
        ids = [p for _, _, patients in items for p in patients]
        # (The index looks up the candidates of the batch's new Patients together.)
        batch = (self.link_batch(conn, ids, settings=self.settings,
                                 resources=self._stored_patients)
                 if self.link_batch else contextlib.nullcontext())
        try:
            with batch:  # the index writes new persons' rows together (mpi.service.batched)
                for row, mapped, patients in items:
                    self._identify(conn, row, mapped, [p for p in patients if p not in linked])
                    linked.update(patients)
        except DBAPIError:
            raise
        except Exception as e:
            raise _LinkFailed from e

    def drain(self, limit: int = 50, *, on_batch: Callable[[BatchResult], None] | None = None,
              ) -> BatchResult:
        """Process until the inbox has nothing pending (tests, one-shot CLI runs)."""
        total = BatchResult()
        while True:
            r = self.run_batch(limit)
            if r.busy:
                time.sleep(0.01)
                continue
            if not r.claimed:
                return total
            total.claimed += r.claimed
            total.done += r.done
            total.dead += r.dead
            total.resources += r.resources
            for k, v in r.reasons.items():
                total.reasons[k] = total.reasons.get(k, 0) + v
            if on_batch:
                on_batch(r)

    # --- one message ------------------------------------------------------------------------

    def _prepare(self, conn: Connection, row: Row[Any]) -> Mapped | tuple[str, str, str]:
        """The message mapped to a bundle, or the dead-letter reason (rule, field, detail)."""
        try:
            return self.map(conn, unseal(self.settings, row), row)
        except DBAPIError:
            raise
        except Exception as e:
            return _reason(e, row)

    def _one(self, conn: Connection, row: Row[Any], prepared: Mapped | tuple[str, str, str],
             result: BatchResult, done: list[tuple[int, int, str | None, datetime | None]],
             deferred: list[tuple[Row[Any], Mapped, list[str]]] | None,
             buf: IndexBuffer | None = None, isolate: bool = True) -> bool:
        """Store one message (``isolate``: in its own savepoint, else a failure raises
        :class:`_StoreFailed`); False if it became a dead letter."""
        mapped = prepared if isinstance(prepared, Mapped) else None
        if mapped is not None:
            snapshot = dict(buf) if buf is not None and isolate else None
            try:
                with conn.begin_nested() if isolate else contextlib.nullcontext():
                    stored, patients, learned, moved = self._store(conn, row, mapped, buf)
                    if deferred is None:
                        self._identify(conn, row, mapped, patients)
                    elif patients or mapped.merges:
                        deferred.append((row, mapped, patients))
                self._known.update(learned)  # only once the message's writes stand
                self._clocks.update(moved)
                self._moved.update(moved)
                done.append((row.id, stored, mapped.iin_status, mapped.event_time))
                result.done += 1
                result.resources += stored
                return True
            except DBAPIError:
                raise  # deadlock / connection loss: the whole batch rolls back and is retried
            except Exception as e:
                if not isolate:
                    raise _StoreFailed from e
                prepared = _reason(e, row)
                if buf is not None and snapshot is not None:
                    buf.clear()  # the message's index rows go with its savepoint
                    buf.update(snapshot)
        assert not isinstance(prepared, Mapped)
        rule, fld, detail = prepared
        repo.insert_dead_letter(conn, inbox_id=row.id, source_id=row.source_id, rule=rule,
                                field=fld, detail=detail)
        repo.finish_message(conn, row.id, status="dead", stored=0,
                            iin_status=mapped.iin_status if mapped else None,
                            event_time=mapped.event_time if mapped else None)
        result.dead += 1
        result.reasons[rule] = result.reasons.get(rule, 0) + 1
        return False

    def _store(self, conn: Connection, row: Row[Any], mapped: Mapped,
               buf: IndexBuffer | None = None
               ) -> tuple[int, list[str], dict[tuple[str, str], list[str]],
                          dict[tuple[str, str], repo.Clock]]:
        bundle = mapped.bundle
        entries: list[dict[str, Any]] = bundle["entry"]
        # UTC, so that SQLite (which keeps no offset) compares clocks as PostgreSQL does.
        when = (mapped.event_time or _aware(row.received_at)).astimezone(UTC)
        keys = self._record_keys_of.get(row.id) or self._record_keys(row, mapped)
        # The records this message carries the newest state of (their clocks move to it).
        newest = {k for k in set(keys.values()) if repo.newer(
            self._clocks.get((row.source_id, k)), when, row.id)}
        moved = {(row.source_id, k): (when, row.id) for k in newest}
        targets = []
        for i, e in enumerate(entries):
            if i in keys and keys[i] not in newest:
                # A later state of this record is already stored: keep it (the entry only
                # names it, for the bundle's references).
                url = e["request"]["url"]
                rtype, _, query = url.partition("?")
                if not query:  # by id
                    rtype, _, rid = url.partition("/")
                    query = f"_id={rid}"
                e["request"] = {"method": "POST", "url": rtype, "ifNoneExist": query}
                continue
            if e.get("fullUrl"):
                targets.append({"reference": e["fullUrl"]})
        if targets:
            entries.append(_provenance(row, mapped, targets))
        svc = FhirService(conn, self.keys, SystemAccess(source_id=row.source_id),
                          index_buffer=buf, held_locks=self._held, known_ids=self._known)
        response = svc.transaction(bundle, read_matched=False)  # only locations needed
        written = 0
        patients: list[str] = []
        learned = self._learned(entries, response["entry"])
        for e, r in zip(entries, response["entry"], strict=True):
            status = r.get("response", {}).get("status", "")
            rtype = e["resource"]["resourceType"]
            if status.startswith("201") or (status.startswith("200") and e["request"][
                    "method"] == "PUT"):
                if rtype != "Provenance":
                    written += 1
                if rtype == "Patient":
                    loc = r["response"].get("location", "")
                    pid = loc.split("/")[1] if "/" in loc else ""
                    patients.append(pid)
                    if ("Patient", pid) in svc.unchanged:
                        continue
                    self._changed_patients.add(pid)
                    if pid and not e["resource"].get("link"):
                        # What was just stored, for the patient index (saves reading it
                        # back); a Patient.link may hold bundle-local references: read.
                        self._stored_patients[pid] = e["resource"]
        return written, [p for p in patients if p], learned, moved

    def _record_keys(self, row: Row[Any], mapped: Mapped) -> dict[int, str]:
        """The record clock keys of a message's updates (conditional, or by id), by entry
        index."""
        return {i: record_key(self.settings, row.source_id, e["request"]["url"])
                for i, e in enumerate(mapped.bundle["entry"])
                if e["request"]["method"] == "PUT"}

    def _learned(self, entries: list[dict[str, Any]], responses: list[dict[str, Any]]
                 ) -> dict[tuple[str, str], list[str]]:
        """What the batch's known answers become after these writes: each conditional key
        written names the resource it went to, and a stored resource joins the answer of
        any other known ``identifier=system|value`` it carries (as the search index will
        once the batch's rows are flushed).  An identifier an update drops is not taken
        out: the mappers always keep the identifier a record is keyed by."""
        out: dict[tuple[str, str], list[str]] = {}
        for e, r in zip(entries, responses, strict=True):
            loc = r.get("response", {}).get("location", "")
            if not r.get("response", {}).get("status", "").startswith(("200", "201")) or \
                    loc.count("/") < 1:
                continue
            rtype, rid = loc.split("/")[:2]
            req = e["request"]
            if req["method"] == "PUT" and "?" in req["url"]:
                out[(rtype, req["url"].split("?", 1)[1])] = [rid]
            elif req["method"] == "POST" and req.get("ifNoneExist"):
                out[(rtype, req["ifNoneExist"])] = [rid]
            for ident in (e.get("resource") or {}).get("identifier") or []:
                key = (rtype, f"identifier={ident.get('system')}|{ident.get('value')}")
                ids = out.get(key, self._known.get(key))
                if ids is not None and rid not in ids:
                    out[key] = sorted([*ids, rid])
        return out

    def _identify(self, conn: Connection, row: Row[Any], mapped: Mapped,
                  patients: list[str]) -> None:
        """Link the message's stored Patients to persons; apply the merges it announces."""
        if self.link is not None:
            for pid in patients:
                if pid not in self._changed_patients and self.link_unless is not None:
                    self.link_unless(conn, self.settings, pid)
                else:
                    self.link(conn, self.settings, pid,
                              resource=self._stored_patients.get(pid))
        if mapped.merges:
            svc = FhirService(conn, self.keys, SystemAccess(source_id=row.source_id))
            for survivor, merged in mapped.merges:
                self._merge(conn, svc, row, mapped, survivor, merged)

    def _merge(self, conn: Connection, svc: FhirService, row: Row[Any], mapped: Mapped,
               survivor: str, merged: str) -> None:
        sys = source_system(row.source_id, "patient")
        ids_s = svc.search_ids("Patient", f"identifier={sys}|{survivor}")
        ids_m = svc.search_ids("Patient", f"identifier={sys}|{merged}")
        if ids_m and ids_s:
            # The merged record stays (source records are never destroyed), marked replaced.
            old = svc.read("Patient", ids_m[0])
            links = [lk for lk in old.get("link", []) if lk.get("type") != "replaced-by"]
            links.append({"other": {"reference": f"Patient/{ids_s[0]}"},
                          "type": "replaced-by"})
            svc.update("Patient", ids_m[0], {**old, "active": False, "link": links})
        repo.record_merge(conn, source_id=row.source_id, survivor=ids_s[0] if ids_s else "",
                          merged=ids_m[0] if ids_m else "", inbox_id=row.id,
                          event_time=mapped.event_time)


class _LinkFailed(Exception):
    """Linking at the end of a batch failed for a reason other than the database."""


class _StoreFailed(Exception):
    """A message failed to store in a batch run without a savepoint per message."""


def _reason(e: Exception, row: Row[Any]) -> tuple[str, str, str]:
    """The dead-letter reason (rule, field, detail) for an exception a message raised."""
    if isinstance(e, Reject):
        return e.rule, e.field, e.detail
    if isinstance(e, UsmisError):
        return "fhir-" + e.code, e.expression[0] if e.expression else "resource", e.message
    # A bug must cost one message, not the batch.  Logged without the exception's message,
    # which may quote the data (a name, an IIN): its type and where it was raised.
    tb = traceback.extract_tb(e.__traceback__)
    where = f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    log.error("ingest message failed", inbox_id=row.id, source=row.source_id,
              error=type(e).__name__, where=where)
    return "internal", "message", type(e).__name__


_CONDITIONAL_REF = re.compile(rb'"reference":"[A-Za-z]+\?')


def _reads_back(mapped: Mapped, written: set[str]) -> bool:
    """Does the message look up, through the search index, what an earlier message of the
    batch may have written?  Its conditional keys (a record the batch already wrote),
    a conditional reference, a read or search entry, or a merge (found by identifier)."""
    if mapped.merges or any(k in written for k in _conditional_keys(mapped)):
        return True
    entries = mapped.bundle.get("entry", [])
    if any((e.get("request") or {}).get("method") in ("GET", "HEAD", "DELETE") for e in entries):
        return True
    return _CONDITIONAL_REF.search(orjson.dumps(mapped.bundle)) is not None


def _record_locks(mapped: Mapped, source_id: str) -> list[str]:
    """The locks a message's records are written under: its conditional keys, the
    ``Type/id`` of each update by id (so that two workers never write one record at once,
    and its clock orders them), and the key of each Patient an A40 merges away (the merge
    updates it while linking: had another batch written it, that batch waited for the
    linking lock this one held, and this one for its row — a deadlock)."""
    sys = source_system(source_id, "patient")
    return _conditional_keys(mapped) + [
        str(e["request"]["url"]) for e in mapped.bundle.get("entry", [])
        if (e.get("request") or {}).get("method") == "PUT"
        and "?" not in str(e["request"].get("url", ""))] + [
        f"Patient?identifier={sys}|{merged}" for _, merged in mapped.merges]


def _deletes(mapped: Mapped) -> bool:
    return any((e.get("request") or {}).get("method") == "DELETE"
               for e in mapped.bundle.get("entry", []))


def _conditional_keys(mapped: Mapped) -> list[str]:
    """The conditional-key locks the message's bundle will take (as the FHIR service names
    them: ``Type?criteria`` of conditional PUTs and ``ifNoneExist`` creates)."""
    keys = []
    for e in mapped.bundle.get("entry", []):
        req = e.get("request") or {}
        url = str(req.get("url", ""))
        if req.get("method") == "PUT" and "?" in url:
            keys.append(url)
        elif req.get("method") == "POST" and req.get("ifNoneExist"):
            keys.append(f"{url}?{req['ifNoneExist']}")
    return keys


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _provenance(row: Row[Any], mapped: Mapped, targets: list[dict[str, str]]) -> dict[str, Any]:
    """Who delivered this, in which message, when (FHIR R4 provenance.html)."""
    prov: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": targets,
        "recorded": datetime.now(UTC).isoformat(),
        "activity": {"coding": [{"system": PROVENANCE_ACTIVITY, "code": "UPDATE"}]},
        "agent": [{
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                "code": "author"}]},
            "who": {"identifier": {"system": "https://usmis.kz/source", "value": row.source_id},
                    "display": f"source {row.source_id}"},
        }],
        "entity": [{
            "role": "source",
            "what": {"identifier": {
                "system": f"{source_uri(row.source_id)}/message",
                "value": f"{row.channel}:{row.message_id}"}},
        }],
        "meta": {"source": source_uri(row.source_id)},
    }
    if mapped.event_time is not None:
        prov["occurredDateTime"] = mapped.event_time.isoformat()
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": prov,
            "request": {"method": "POST", "url": "Provenance"}}
