"""What the master patient index does: link source Patients to persons, and change links.

Real time (:func:`link_source_patient`, called by ingest in the transaction that stores the
Patient): the record's blocking keys are HMAC'd and looked up; the candidates' sealed
profiles are opened in memory, compared and scored with the trained Fellegi–Sunter weights
in-process; the decision is deterministic on a trusted IIN, automatic above the link
threshold, a review task between the thresholds (the record gets its own person meanwhile:
a wrong link is worse than a late one), a new person below.

Every change of a link is an operation with an id, an actor, a reason and a time, stored in
``mpi_link_event``; :func:`revert` undoes an operation by moving its records back.  Source
records are never touched: the unified record of a person is the union of the compartments
of the Patients linked to it (:func:`patients_of`), so the clinical record follows a link,
unlink, merge or split at once.

Services do not commit (STYLE.md rule 3): the caller's transaction owns the change.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import Connection

from usmis.config import Settings
from usmis.kit.crypto import Keyring, keyring_for
from usmis.kit.db import insert_rows
from usmis.kit.errors import BadRequest, Conflict, NotFound
from usmis.kit.logging import get_logger
from usmis.mpi import fs, tables
from usmis.mpi import repository as repo
from usmis.mpi.model import (
    MatchRecord,
    blocking_keys,
    compare,
    iin_deterministic,
    record_from_patient,
)

log = get_logger(__name__)

BLOCK_PURPOSE = "mpi.block"
SYSTEM_ACTOR = "mpi"

# Links made by people (a registrar, or the source's own assertion): the machine never
# moves them (relink) nor merges their persons on its own (real-time bridging).
PINNED = frozenset({"manual", "review", "split", "unlink", "source-merge", "patient-link"})

Method = Literal[
    "iin", "probabilistic", "new", "manual", "review", "merge", "split", "unlink", "revert",
    "source-merge", "patient-link", "relink",
]  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC)


def new_key() -> str:
    """An opaque key (person key, operation id): random, says nothing about the person."""
    return uuid.uuid4().hex


def keyring(settings: Settings) -> Keyring:
    return keyring_for(settings.resolved_key_file)


# ---------------------------------------------------------------------------- the model

_model_cache: dict[str, tuple[float, int | None, fs.FSModel]] = {}
_model_lock = threading.Lock()
MODEL_TTL_SECONDS = 30.0


def current_model(conn: Connection, *, refresh: bool = False) -> fs.FSModel:
    """The newest trained model (cached per database for a few seconds), else the default."""
    url = str(conn.engine.url)
    now = time.monotonic()
    with _model_lock:
        hit = _model_cache.get(url)
    if hit and not refresh and now - hit[0] < MODEL_TTL_SECONDS:
        return hit[2]
    row = repo.latest_model(conn)
    model = fs.FSModel.from_json(row.params) if row is not None else fs.default_model()
    with _model_lock:
        _model_cache[url] = (now, row.id if row is not None else None, model)
    return model


def save_model(conn: Connection, model: fs.FSModel) -> int:
    model_id = repo.insert_model(conn, model.to_json(), _now())
    with _model_lock:
        _model_cache.pop(str(conn.engine.url), None)
    return model_id


# ---------------------------------------------------------------------------- batches


@dataclass
class _Pending:
    """New persons' rows waiting to be written together (see :func:`batched`)."""

    persons: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    patients: set[str] = field(default_factory=set)
    block_keys: set[str] = field(default_factory=set)
    locked: bool = False  # the linking lock is held by this transaction
    announced: set[str] = field(default_factory=set)  # the patient ids batched() was given
    unlinked: set[str] = field(default_factory=set)  # announced records known to have no link
    # Candidate rows of the announced new records, looked up together when the batch began
    # (under the linking lock), and what the batch changed since: the blocking keys it
    # wrote (or is holding), the records it (re)linked, whether it merged persons.
    prefetched: dict[str, list[Any]] = field(default_factory=dict)
    hashed: dict[str, tuple[MatchRecord, list[str]]] = field(default_factory=dict)  # their keys
    made_from: dict[str, dict[str, Any]] = field(default_factory=dict)  # hashed records' Patients
    touched_keys: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)
    stale: bool = False

    def candidate_rows(self, record_key: str, block_keys: Sequence[str]) -> list[Any] | None:
        """The rows the candidate lookup would return now, if the ones prefetched still
        are: no key of the record was written since, no record among them was relinked
        or refreshed since, and no persons were merged.  Else None (ask the database)."""
        rows = self.prefetched.pop(record_key, None)
        if rows is None or self.stale or not self.touched_keys.isdisjoint(block_keys) or \
                any(r.patient_id in self.touched for r in rows):
            return None
        return rows

    def wrote(self, record_key: str, block_keys: Sequence[str]) -> None:
        self.touched.add(record_key)
        self.touched_keys.update(block_keys)


_PENDING = "usmis.mpi.pending"


@contextmanager
def batched(conn: Connection, patient_ids: Sequence[str] = (), *,
            settings: Settings | None = None,
            resources: Mapping[str, dict[str, Any]] | None = None) -> Iterator[None]:
    """Link many records in one transaction (ingest's batch) with fewer round trips: the
    linking lock is taken once; which of the announced ``patient_ids`` already have a
    link is asked once; the candidates of those that have none, if their Patients are
    given (``resources`` by id, with ``settings``), are looked up in one statement; and
    the rows of records that simply get a new person, or a link to one person and nothing
    to merge or review, wait in memory and are written in one statement per table —
    before any lookup that could need them (a later record of the batch sharing a
    blocking key, or naming a waiting record), before any other link write, and at the
    end.  On an exception nothing waiting is written (the caller's transaction rolls
    back)."""
    if _PENDING in conn.info:
        yield
        return
    ids = set(patient_ids)
    pending = _Pending(announced=ids, unlinked=ids - repo.linked_patients(conn, sorted(ids)))
    wanted = {pid: res for pid, res in (resources or {}).items()
              if pid in pending.unlinked and not res.get("link")}
    if settings is not None and wanted:
        keys = keyring(settings)
        for pid, res in wanted.items():
            record = record_from_patient(pid, res)
            pending.hashed[pid] = (record, sorted(set(hashed_keys(keys, record))))
            pending.made_from[pid] = res
        repo.lock_linking(conn)  # what is read now stays true but for the batch's writes
        pending.locked = True
        pending.prefetched = repo.candidates_many(
            conn, {pid: ks for pid, (_, ks) in pending.hashed.items()})
    conn.info[_PENDING] = pending
    try:
        yield
        _flush(conn)
    finally:
        conn.info.pop(_PENDING, None)


def _flush(conn: Connection) -> None:
    p: _Pending | None = conn.info.get(_PENDING)
    if p is None or not p.links:
        return
    for table, rows in ((tables.person, p.persons), (tables.link, p.links),
                        (tables.block, p.blocks), (tables.link_event, p.events)):
        insert_rows(conn, table, rows)
    p.persons, p.links, p.blocks, p.events = [], [], [], []
    p.patients.clear()
    p.block_keys.clear()


# ---------------------------------------------------------------------------- profiles


def seal_profile(keys: Keyring, record: MatchRecord) -> dict[str, Any]:
    sealed = keys.seal(orjson.dumps(record.to_compact()), f"mpi/{record.key}".encode())
    return {"kek_id": sealed.kek_id, "dek": sealed.dek, "profile": sealed.ciphertext}


def open_profile(keys: Keyring, row: Any) -> MatchRecord:
    plain = keys.open(row.kek_id, row.dek, row.profile, f"mpi/{row.patient_id}".encode())
    return MatchRecord.from_compact(orjson.loads(plain))


def hashed_keys(keys: Keyring, record: MatchRecord) -> list[str]:
    return [keys.blind_index(BLOCK_PURPOSE, k) for k in blocking_keys(record)]


# ---------------------------------------------------------------------------- scoring


@dataclass
class Candidate:
    """One person a record may belong to, with the best-scoring of its source records."""

    person_key: str
    patient_id: str
    weight: float
    deterministic: bool = False
    trusted_iins: set[str] = field(default_factory=set)

    @property
    def probability(self) -> float:
        return 1.0 if self.deterministic else fs.FSModel.probability(self.weight)


def score_candidates(
    conn: Connection,
    settings: Settings,
    record: MatchRecord,
    *,
    model: fs.FSModel | None = None,
    block_keys: Sequence[str] | None = None,
) -> list[Candidate]:
    """Persons sharing a blocking key with ``record``, best first (plaintext in memory only).

    The records compared are the :data:`repository.CANDIDATE_LIMIT` sharing the most
    blocking keys with ``record`` (``block_keys``: its hashed keys, if already computed).
    """
    keys = keyring(settings)
    model = model or current_model(conn)
    if block_keys is None:
        block_keys = hashed_keys(keys, record)
    pending: _Pending | None = conn.info.get(_PENDING)
    rows = pending.candidate_rows(record.key, block_keys) if pending is not None else None
    if rows is None:
        rows = repo.candidates(conn, block_keys)
    best: dict[str, Candidate] = {}
    for row in rows:
        if row.patient_id == record.key or row.profile is None:
            continue
        other = open_profile(keys, row)
        gamma = compare(record, other)
        det = bool(record.trusted_iin) and iin_deterministic(record, other, gamma)
        weight = fs.DETERMINISTIC if det else model.weight(gamma)
        cand = best.get(row.person_key)
        if cand is None:
            cand = best[row.person_key] = Candidate(row.person_key, row.patient_id, weight, det)
        elif weight > cand.weight:
            cand.patient_id, cand.weight, cand.deterministic = row.patient_id, weight, det
        if other.trusted_iin:
            cand.trusted_iins.add(other.trusted_iin)
    return sorted(best.values(), key=lambda c: -c.weight)


@dataclass
class LinkOutcome:
    person_key: str
    method: str
    score: float | None
    review_ids: list[int] = field(default_factory=list)


def link_record(
    conn: Connection,
    settings: Settings,
    record: MatchRecord,
    *,
    actor: str = SYSTEM_ACTOR,
    prefer_person: str | None = None,
) -> LinkOutcome:
    """Link one normalised source record (new or changed) to a person; return the decision.

    ``prefer_person``: a person the source itself asserted (FHIR ``Patient.link``).
    An already linked record keeps its person (links change only by operations or relink);
    its profile and blocking keys are refreshed.
    """
    keys = keyring(settings)
    now = _now()
    sealed = seal_profile(keys, record)
    pending: _Pending | None = conn.info.get(_PENDING)
    known = pending.hashed.pop(record.key, None) if pending is not None else None
    # The keys hashed for the batch's prefetch, if this is the record they were made of.
    block_keys = known[1] if known and (known[0] is record or known[0] == record) else sorted(
        set(hashed_keys(keys, record)))
    if pending is not None and (record.key in pending.patients or prefer_person
                                or not pending.block_keys.isdisjoint(block_keys)):
        _flush(conn)  # what follows must see the waiting rows
    if pending is not None and record.key in pending.unlinked:
        # Known to have no link when the batch began, and not linked since (only linking
        # this record makes its link): no need to ask.  Later calls ask the database.
        pending.unlinked.discard(record.key)
        existing = None
    else:
        existing = repo.get_link(conn, record.key)
    if existing is not None:
        repo.update_link(conn, record.key, updated_at=now, source_id=record.source_id, **sealed)
        repo.replace_block_keys(conn, record.key, block_keys)
        if pending is not None:
            pending.wrote(record.key, block_keys)
        return LinkOutcome(existing.person_key, "existing", existing.score)

    # Two workers linking two records of one new person at once would each find no
    # candidate (the other's person is not committed yet) and make two persons.
    if pending is None or not pending.locked:
        repo.lock_linking(conn)
        if pending is not None:
            pending.locked = True
    model = current_model(conn)
    # (No registrar's "not-link" can name this record yet: review items name linked
    # records only, and this one has no link.)
    cands = score_candidates(conn, settings, record, model=model, block_keys=block_keys)
    outcome: LinkOutcome
    reviews: list[Candidate] = []
    if prefer_person and repo.get_person(conn, prefer_person) is not None:
        outcome = LinkOutcome(prefer_person, "patient-link", None)
    elif cands and cands[0].deterministic:
        outcome = LinkOutcome(cands[0].person_key, "iin", None)
    elif (
        cands
        and model.thresholds.decide(cands[0].weight) == "link"
        and not _conflicts(record, cands[0])
    ):
        outcome = LinkOutcome(cands[0].person_key, "probabilistic", cands[0].weight)
    else:
        outcome = LinkOutcome(new_key(), "new", None)
        reviews = [c for c in cands[:3] if c.weight >= model.thresholds.review]
    link_row = {
        "patient_id": record.key,
        "person_key": outcome.person_key,
        "source_id": record.source_id or None,
        "method": outcome.method,
        "score": outcome.score,
        "actor": actor,
        "updated_at": now,
        **sealed,
    }
    block_rows = [{"key": k, "patient_id": record.key} for k in block_keys]
    event = {
        "operation_id": new_key(),
        "action": "link",
        "patient_id": record.key,
        "person_key": outcome.person_key,
        "previous_person_key": None,
        "method": outcome.method,
        "score": outcome.score,
        "reason": None,
        "actor": actor,
        "at": now,
    }
    if pending is not None:
        pending.wrote(record.key, block_keys)
    if pending is not None and not reviews and (outcome.method == "new" or (
            outcome.method in ("iin", "probabilistic")
            and not _bridging(outcome, cands, model))):
        # A new person, or a link to a person and no other strongly linked (nothing to
        # merge or review): the rows wait for the batch's statements.
        if outcome.method == "new":
            pending.persons.append({"person_key": outcome.person_key, "status": "active",
                                    "created_at": now})
        pending.links.append(link_row)
        pending.blocks.extend(block_rows)
        pending.events.append(event)
        pending.patients.add(record.key)
        pending.block_keys.update(block_keys)
        return outcome
    _flush(conn)  # the waiting rows first: the events keep their order
    if outcome.method == "new":
        repo.insert_person(conn, outcome.person_key, now)
    repo.insert_link(conn, link_row)
    repo.insert_block_rows(conn, block_rows)
    repo.insert_events(conn, [event])
    if outcome.method in ("iin", "probabilistic"):
        reviews = _bridge(conn, record, outcome, cands, model, actor)
    for c in reviews:
        outcome.review_ids.append(
            repo.insert_review(
                conn,
                {
                    "patient_id": record.key,
                    "candidate_person_key": c.person_key,
                    "score": c.weight,
                    "status": "open",
                    "created_at": now,
                },
            )
        )
    return outcome


def _bridging(outcome: LinkOutcome, cands: list[Candidate], model: fs.FSModel) -> bool:
    """Does another person than the chosen one link strongly (so :func:`_bridge` acts)?"""
    return any(c.person_key != outcome.person_key and (
        c.deterministic or model.thresholds.decide(c.weight) == "link") for c in cands)


def _bridge(
    conn: Connection,
    record: MatchRecord,
    outcome: LinkOutcome,
    cands: list[Candidate],
    model: fs.FSModel,
    actor: str,
) -> list[Candidate]:
    """A record that links strongly to two persons shows they are one: merge them.

    This is what batch clustering does (every pair above the link threshold is joined
    unless their trusted IINs differ); without it, a person whose records arrive in an
    unlucky order stays split until the next relink.  Not merged automatically, but
    returned for a registrar's review: persons holding different trusted IINs, and
    persons a person decided on (a pinned link or a "not-link" answer).
    """
    chosen = cands[0] if cands and cands[0].person_key == outcome.person_key else None
    iins = set(chosen.trusted_iins) if chosen else set()
    if record.trusted_iin:
        iins.add(record.trusted_iin)
    review: list[Candidate] = []
    for c in cands:
        if not _bridging(outcome, [c], model):
            continue
        conflict = len(iins | c.trusted_iins) > 1
        if conflict or repo.decided_by_people(conn, [outcome.person_key, c.person_key], PINNED):
            # Asked once per pair of persons, not for each of their records; as in batch,
            # an IIN-rule pair refused for an IIN conflict is not asked.
            if not (conflict and c.deterministic) and not repo.open_review_between(
                conn, outcome.person_key, c.person_key
            ):
                review.append(c)
            continue
        iins |= c.trusted_iins
        merge(conn, c.person_key, outcome.person_key, actor=actor,
              reason="one incoming record links strongly to both", method="merge")  # fmt: skip
    return review[:3]


def _conflicts(record: MatchRecord, cand: Candidate) -> bool:
    """Two different trusted IINs: two people, whatever the names say."""
    iin = record.trusted_iin
    return bool(iin and cand.trusted_iins and iin not in cand.trusted_iins)


def load_patient(conn: Connection, settings: Settings, patient_id: str) -> dict[str, Any]:
    """The Patient as the FHIR store holds it (decrypted in memory; system access)."""
    from usmis.fhir.service import FhirService

    return FhirService(conn, keyring(settings)).read("Patient", patient_id)


def _linked_patients(conn: Connection, settings: Settings, resource: dict[str, Any]) -> list[str]:
    """Stored Patients this one says are the same person (FHIR ``Patient.link`` of type
    replaces / replaced-by / refer / seealso, by reference or by identifier — the HL7 A40
    mapping names the merged record by its source identifier)."""
    from usmis.fhir.service import FhirService

    out: list[str] = []
    for ln in resource.get("link") or []:
        if not isinstance(ln, dict) or ln.get("type") not in (
            "replaces", "replaced-by", "refer", "seealso",
        ):  # fmt: skip
            continue
        other = ln.get("other") or {}
        ref = str(other.get("reference") or "")
        if ref.startswith("Patient/"):
            out.append(ref.removeprefix("Patient/"))
            continue
        ident = other.get("identifier") or {}
        system, value = ident.get("system"), ident.get("value")
        if system and value:
            svc = FhirService(conn, keyring(settings))
            out.extend(svc.search_ids("Patient", f"identifier={system}|{value}", limit=5))
    return [p for p in out if p != resource.get("id")]


def link_source_patient(conn: Connection, settings: Settings, patient_id: str,
                        resource: dict[str, Any] | None = None) -> str:
    """Link a stored source Patient to a person; return the person key.

    Called by ingest after it stores each Patient, in the same transaction (``resource``:
    the Patient as just stored, if the caller has it; else it is read).  Idempotent:
    calling it again for a linked Patient refreshes its match profile and keeps the link.
    A ``Patient.link`` to another stored Patient (HL7 A40 merge, FHIR replaces/seealso) is
    the source's own assertion that both are one person: the persons are merged.
    """
    if resource is None:
        resource = load_patient(conn, settings, patient_id)
    pending: _Pending | None = conn.info.get(_PENDING)
    known = pending.hashed.get(patient_id) if pending is not None else None
    if known is not None and pending is not None and pending.made_from.get(patient_id) is resource:
        record = known[0]  # made of this very Patient when the batch began
    else:
        record = record_from_patient(patient_id, resource)
    if resource.get("link"):
        _flush(conn)  # the Patients it names may be waiting in this batch (see batched)
    asserted = [p for p in _linked_patients(conn, settings, resource) if person_of(conn, p)]
    prefer = person_of(conn, asserted[0]) if asserted else None
    outcome = link_record(conn, settings, record, prefer_person=prefer)
    person = outcome.person_key
    for other in asserted:
        other_person = person_of(conn, other)
        if other_person is not None and other_person != person:
            apply_source_merge(conn, patient_id, other, actor=f"source:{record.source_id}")
            person = resolve_person(conn, person)
    log.debug("mpi.linked", patient=patient_id, person=person, method=outcome.method)
    return person


def link_unless_linked(conn: Connection, settings: Settings, patient_id: str) -> None:
    """For a Patient the store found unchanged (no new version): link it only if it has no
    link — its profile and blocking keys are what they were.  Inside :func:`batched`, an
    announced Patient's link is known without asking."""
    pending: _Pending | None = conn.info.get(_PENDING)
    if pending is not None and patient_id in pending.announced:
        if patient_id not in pending.unlinked:
            return
    elif repo.get_link(conn, patient_id) is not None:
        return
    link_source_patient(conn, settings, patient_id)


# ---------------------------------------------------------------------------- queries


def person_of(conn: Connection, patient_id: str) -> str | None:
    row = repo.get_link(conn, patient_id)
    return str(row.person_key) if row is not None else None


def patients_of(conn: Connection, person_key: str) -> list[str]:
    """The source Patients whose compartments make up this person's unified record.

    A merged person key still answers: it resolves to the person it was merged into.
    """
    key = resolve_person(conn, person_key)
    return [r.patient_id for r in repo.links_of_person(conn, key)]


def resolve_person(conn: Connection, person_key: str) -> str:
    seen = set()
    key = person_key
    while True:
        row = repo.get_person(conn, key)
        if row is None:
            raise NotFound("person is not known", expression=["person"])
        if row.status != "merged" or not row.merged_into or key in seen:
            return key
        seen.add(key)
        key = row.merged_into


def unified_record(
    conn: Connection, settings: Settings, person_key: str, *, page: int = 1000
) -> list[dict[str, Any]]:
    """The person's unified record: every live resource of every linked Patient's
    compartment (system access — callers in front of users go through the access policy).
    """
    from usmis.fhir.service import FhirService

    svc = FhirService(conn, keyring(settings))
    out: list[dict[str, Any]] = []
    for pid in patients_of(conn, person_key):
        offset = 0
        while True:
            rows, total = svc.everything(pid, count=page, offset=offset)
            out.extend(orjson.loads(r.body) for r in rows if r.body is not None)
            offset += len(rows)
            if not rows or offset >= total:
                break
    return out


def history(conn: Connection, patient_id: str) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in repo.history_of_patient(conn, patient_id)]


# ---------------------------------------------------------------------------- operations


def _move(
    conn: Connection,
    patient_ids: Sequence[str],
    person_key: str,
    *,
    action: str,
    method: str,
    actor: str,
    reason: str,
    operation_id: str | None = None,
) -> str:
    """Move links to ``person_key`` and record one event per moved record."""
    op = operation_id or new_key()
    now = _now()
    events = []
    moved = []
    for pid in patient_ids:
        row = repo.get_link(conn, pid)
        if row is None:
            raise NotFound("source Patient is not linked", expression=["patient"])
        if row.person_key == person_key:
            continue
        moved.append(pid)
        events.append(
            {
                "operation_id": op,
                "action": action,
                "patient_id": pid,
                "person_key": person_key,
                "previous_person_key": row.person_key,
                "method": method,
                "score": None,
                "reason": reason,
                "actor": actor,
                "at": now,
            }
        )
    repo.move_links(conn, moved, person_key, method=method, score=None, actor=actor, updated_at=now)
    repo.insert_events(conn, events)
    pending: _Pending | None = conn.info.get(_PENDING)
    if pending is not None and moved:
        pending.stale = True  # the persons of prefetched candidates may have changed
    return op


def _require_reason(reason: str) -> None:
    if not reason or not reason.strip():
        raise BadRequest("a reason is required", expression=["reason"])


def _active_person(conn: Connection, person_key: str) -> str:
    key = resolve_person(conn, person_key)
    return key


def link(conn: Connection, patient_id: str, person_key: str, *, actor: str, reason: str) -> str:
    """Link a source record to a person (a registrar's decision); returns the operation id."""
    _require_reason(reason)
    target = _active_person(conn, person_key)
    return _move(conn, [patient_id], target, action="link", method="manual", actor=actor,
                 reason=reason)  # fmt: skip


def unlink(conn: Connection, patient_id: str, *, actor: str, reason: str) -> str:
    """Detach a source record from its person: it becomes a person of its own."""
    _require_reason(reason)
    new_person = new_key()
    repo.insert_person(conn, new_person, _now())
    _move(conn, [patient_id], new_person, action="unlink", method="unlink", actor=actor,
          reason=reason)  # fmt: skip
    return new_person


def merge(
    conn: Connection, from_person: str, into_person: str, *, actor: str, reason: str,
    method: str = "merge",
) -> str:  # fmt: skip
    """All records of ``from_person`` move to ``into_person``; the old key resolves to it."""
    _require_reason(reason)
    src = resolve_person(conn, from_person)
    dst = resolve_person(conn, into_person)
    if src == dst:
        raise Conflict("the two persons are already one", expression=["person"])
    pids = [r.patient_id for r in repo.links_of_person(conn, src)]
    op = _move(conn, pids, dst, action="merge", method=method, actor=actor, reason=reason)
    repo.set_person_status(conn, src, "merged", dst)
    # Open review items asking whether a record of the merged person is the other one
    # have their answer now.
    repo.close_answered_reviews(conn, dst, [src, dst], actor, _now())
    repo.insert_events(
        conn,
        [{"operation_id": op, "action": "merge-person", "patient_id": None, "person_key": dst,
          "previous_person_key": src, "method": method, "score": None, "reason": reason,
          "actor": actor, "at": _now()}],
    )  # fmt: skip
    return op


def split(
    conn: Connection, person_key: str, patient_ids: Sequence[str], *, actor: str, reason: str
) -> str:
    """Move some records of a person to a new person; returns the new person key."""
    _require_reason(reason)
    key = resolve_person(conn, person_key)
    own = {r.patient_id for r in repo.links_of_person(conn, key)}
    if not patient_ids or not set(patient_ids) <= own:
        raise BadRequest("split names records that are not this person's", expression=["patient"])
    if set(patient_ids) == own:
        raise BadRequest("split must leave at least one record", expression=["patient"])
    new_person = new_key()
    repo.insert_person(conn, new_person, _now())
    _move(conn, list(patient_ids), new_person, action="split", method="split", actor=actor,
          reason=reason)  # fmt: skip
    return new_person


def revert(conn: Connection, operation_id: str, *, actor: str, reason: str) -> str:
    """Undo an operation: every record it moved goes back; a merged person comes back."""
    _require_reason(reason)
    events = repo.events_of_operation(conn, operation_id)
    if not events:
        raise NotFound("operation is not known", expression=["operation"])
    op = new_key()
    for ev in reversed(events):
        if ev.action == "merge-person" and ev.previous_person_key:
            repo.set_person_status(conn, ev.previous_person_key, "active", None)
    for ev in reversed(events):
        if ev.patient_id and ev.previous_person_key:
            _move(conn, [ev.patient_id], ev.previous_person_key, action="revert",
                  method="revert", actor=actor, reason=reason, operation_id=op)  # fmt: skip
        elif ev.patient_id and ev.action == "link":
            raise Conflict("a first link cannot be reverted; unlink instead",
                           expression=["operation"])  # fmt: skip
    return op


def apply_source_merge(
    conn: Connection, surviving_patient_id: str, merged_patient_id: str, *, actor: str,
    reason: str = "HL7 ADT A40 merge from the source",
) -> str:  # fmt: skip
    """A source said two of its patient records are one (HL7 ADT A40, or a FHIR
    ``Patient.link`` replaced-by): their persons become one.  Both source records stay."""
    a = person_of(conn, surviving_patient_id)
    b = person_of(conn, merged_patient_id)
    if a is None or b is None:
        raise NotFound("both source Patients must be linked first", expression=["patient"])
    if a == b:
        return ""
    return merge(conn, b, a, actor=actor, reason=reason, method="source-merge")


# ---------------------------------------------------------------------------- review queue


@dataclass
class ReviewItem:
    id: int
    patient_id: str
    candidate_person_key: str
    score: float
    status: str
    created_at: datetime

    @property
    def probability(self) -> float:
        return fs.FSModel.probability(self.score)


def list_review(
    conn: Connection, *, status: str = "open", limit: int = 50, offset: int = 0
) -> list[ReviewItem]:
    return [
        ReviewItem(r.id, r.patient_id, r.candidate_person_key, r.score, r.status, r.created_at)
        for r in repo.list_reviews(conn, status, limit, offset)
    ]


def decide_review(
    conn: Connection,
    review_id: int,
    decision: Literal["link", "not-link"],
    *,
    actor: str,
    reason: str,
) -> str | None:
    """A registrar's decision; 'link' moves the record to the candidate person."""
    _require_reason(reason)
    row = repo.get_review(conn, review_id)
    if row is None:
        raise NotFound("review item is not known", expression=["review"])
    if row.status != "open":
        raise Conflict("review item is already decided", expression=["review"])
    op: str | None = None
    if decision == "link":
        target = resolve_person(conn, row.candidate_person_key)
        current = person_of(conn, row.patient_id)
        if current is not None and current != target:
            # The record's own (new) person disappears into the candidate: a merge keeps
            # anything else linked to it since.
            op = merge(conn, current, target, actor=actor, reason=reason, method="review")
        status = "linked"
    elif decision == "not-link":
        status = "not-linked"
    else:
        raise BadRequest("decision must be link or not-link", expression=["decision"])
    repo.decide_review(conn, review_id, status=status, decided_at=_now(), decided_by=actor,
                       reason=reason)  # fmt: skip
    return op


# ---------------------------------------------------------------------------- stats


def stats(conn: Connection) -> dict[str, Any]:
    out: dict[str, Any] = repo.counts(conn)
    out["links_by_method"] = repo.links_by_method(conn)
    row = repo.latest_model(conn)
    out["model"] = {"trained": row is not None, "id": row.id if row is not None else None}
    return out


def relink_all(settings: Settings) -> dict[str, Any]:
    """Re-cluster every source record in batch (its own transaction); a summary dict."""
    from usmis.kit.db import make_engine, transaction
    from usmis.mpi.relink import relink

    engine = make_engine(settings.resolved_database_url)
    try:
        with transaction(engine) as conn:
            return relink(conn, settings).as_dict()
    finally:
        engine.dispose()


def evaluate(settings: Settings, nation_dir: Any) -> dict[str, Any]:
    """The current links scored against a synthetic nation's ground truth (figures dict)."""
    from pathlib import Path

    from usmis.kit.db import make_engine, transaction
    from usmis.mpi.nation import evaluate_links

    engine = make_engine(settings.resolved_database_url)
    try:
        with transaction(engine) as conn:
            return evaluate_links(conn, settings, Path(nation_dir))
    finally:
        engine.dispose()
