"""``usmis mpi relink``: re-cluster every source record in batch and report what changed.

When: after the model is (re)trained, after a back-load, after the normaliser improved.
How: the records are read from the FHIR store (Patients decrypted in memory), blocked,
compared, the weights re-estimated by EM, the pairs clustered (:mod:`usmis.mpi.batch`);
then the clustering is written back as *moves* of links, each an event of one relink
operation (so :func:`usmis.mpi.service.revert` can undo the whole run).

Decisions of people win over the machine: records whose link was made by a registrar or
asserted by their source (methods manual, review, split, unlink, source-merge,
patient-link) are *pinned* — they keep their person and the cluster follows them.

Person keys are kept stable: a cluster keeps the key that already holds most of its
records; a person left without records is marked merged into the cluster that took most of
them, so an old key keeps resolving.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection

from usmis.config import Settings
from usmis.kit.db import insert_rows
from usmis.kit.logging import get_logger
from usmis.mpi import batch, fs, service, tables
from usmis.mpi import repository as repo
from usmis.mpi.model import MatchRecord, record_from_patient

log = get_logger(__name__)

PINNED = service.PINNED


@dataclass
class RelinkSummary:
    records: int
    pairs_compared: int
    deterministic_pairs: int
    persons_before: int
    persons_after: int
    records_moved: int
    new_persons: int
    persons_retired: int
    review_tasks: int
    model_id: int
    operation_id: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def records_from_store(conn: Connection, settings: Settings) -> list[MatchRecord]:
    """Every live source Patient, normalised (decrypted in memory only)."""
    from usmis.fhir.service import FhirService

    svc = FhirService(conn, service.keyring(settings))
    return [record_from_patient(str(res["id"]), res) for res in svc.iter_resources("Patient")]


def records_from_profiles(conn: Connection, settings: Settings) -> list[MatchRecord]:
    """Every linked record from its sealed profile (no FHIR store needed: benchmarks)."""
    keys = service.keyring(settings)
    return [service.open_profile(keys, row) for row in repo.all_profiles(conn)]


def relink(
    conn: Connection,
    settings: Settings,
    *,
    records: Sequence[MatchRecord] | None = None,
    retrain: bool = True,
    actor: str = "mpi:relink",
) -> RelinkSummary:
    """Re-cluster everything in the caller's transaction; return what changed."""
    started = time.perf_counter()
    recs = list(records) if records is not None else records_from_store(conn, settings)
    link_rows = repo.all_links(conn)
    before = {pid: person for pid, person, _ in link_rows}
    methods = {pid: method for pid, _, method in link_rows}
    model = None if retrain else service.current_model(conn, refresh=True)
    thresholds = service.current_model(conn, refresh=True).thresholds
    result = batch.link_batch(recs, model=model, thresholds=thresholds)
    labels = result.clustering.labels.tolist()

    # Pinned records pull their cluster to their person.
    members: dict[int, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        members[lab].append(i)
    now = service._now()
    target_of_cluster: dict[int, str] = {}
    used: set[str] = set()
    new_persons: list[str] = []
    # Largest clusters choose first, so a big cluster keeps its key.
    for lab, idx in sorted(members.items(), key=lambda kv: -len(kv[1])):
        pinned = Counter(
            before[recs[i].key] for i in idx
            if recs[i].key in before and methods.get(recs[i].key) in PINNED
        )  # fmt: skip
        votes = pinned or Counter(before[recs[i].key] for i in idx if recs[i].key in before)
        chosen = next((k for k, _ in votes.most_common() if k not in used), None)
        if chosen is None:
            chosen = service.new_key()
            new_persons.append(chosen)
        used.add(chosen)
        target_of_cluster[lab] = chosen
    repo.insert_persons(conn, new_persons, now)

    op = service.new_key()
    moves: dict[str, list[str]] = defaultdict(list)
    events: list[dict[str, Any]] = []
    new_links: list[dict[str, Any]] = []
    keyring = service.keyring(settings)
    for i, r in enumerate(recs):
        target = target_of_cluster[labels[i]]
        prev = before.get(r.key)
        if prev is None:
            new_links.append(
                {"patient_id": r.key, "person_key": target, "source_id": r.source_id or None,
                 "method": "relink", "score": None, "actor": actor, "updated_at": now,
                 **service.seal_profile(keyring, r)}
            )  # fmt: skip
        elif prev == target or methods.get(r.key) in PINNED:
            continue
        else:
            moves[target].append(r.key)
        events.append(
            {"operation_id": op, "action": "relink", "patient_id": r.key, "person_key": target,
             "previous_person_key": prev, "method": "relink", "score": None,
             "reason": "batch re-clustering", "actor": actor, "at": now}
        )  # fmt: skip
    insert_rows(conn, tables.link, new_links)
    for target, pids in moves.items():
        repo.move_links(conn, pids, target, method="relink", score=None, actor=actor,
                        updated_at=now)  # fmt: skip
    repo.insert_events(conn, events)

    # Persons left empty resolve to where most of their records went.
    after = {r.key: target_of_cluster[labels[i]] for i, r in enumerate(recs)}
    went: dict[str, Counter[str]] = defaultdict(Counter)
    for pid, prev in before.items():
        if pid in after and after[pid] != prev:
            went[prev][after[pid]] += 1
    retired = 0
    still_used = set(after.values()) | {before[p] for p in before if p not in after}
    for prev, dest in went.items():
        if prev not in still_used:
            repo.set_person_status(conn, prev, "merged", dest.most_common(1)[0][0])
            retired += 1

    # Blocking keys for every record (profiles may have changed with the normaliser).
    repo.clear_index(conn)
    rows = [
        {"key": k, "patient_id": r.key}
        for r in recs
        for k in sorted(set(service.hashed_keys(keyring, r)))
    ]
    for start in range(0, len(rows), 100_000):
        insert_rows(conn, tables.block, rows[start : start + 100_000])

    # The review queue: the machine's open items are replaced by this run's.
    repo.close_open_reviews(conn, "obsolete", now)
    reviews = []
    for i, j, w in result.clustering.review:
        reviews.append(
            {"patient_id": recs[i].key, "candidate_person_key": after[recs[j].key],
             "score": w, "status": "open", "created_at": now}
        )  # fmt: skip
    repo.insert_reviews(conn, reviews)
    model_id = service.save_model(conn, result.model)
    summary = RelinkSummary(
        records=len(recs),
        pairs_compared=result.n_pairs,
        deterministic_pairs=result.n_deterministic,
        persons_before=len(set(before.values())),
        persons_after=len(set(after.values())),
        records_moved=sum(len(v) for v in moves.values()),
        new_persons=len(new_persons),
        persons_retired=retired,
        review_tasks=len(reviews),
        model_id=model_id,
        operation_id=op,
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info("mpi.relinked", **{k: v for k, v in summary.as_dict().items() if k != "seconds"})
    return summary


def fs_thresholds(link: float, review: float) -> fs.Thresholds:
    return fs.Thresholds(link=link, review=review)
