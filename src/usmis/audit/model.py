"""The audit log's pure parts: what an entry says, how it is chained, how a chain is checked.

Chain: ``hash(n) = HMAC-SHA256(chain_key, hash(n-1) || "\\n" || canonical_json(content(n)))``
with ``hash(0)`` = 64 zeros.  The key lives outside the database (``data_dir``), so
someone holding only the database can neither forge an entry nor recompute the chain after
an edit.  The sequence number is *not* part of the content: order is proven by the chain
itself, which lets the verifier tell a reordering from an edit.

Checkpoints: an Ed25519 signature over ``"{seq}|{hash}|{signed_at}"`` of the chain head,
checkable by anyone with the public key (e.g. a regulator holding a copy of the checkpoints).

:func:`verify_chain` walks entries in seq order and reports the *first* problem:

- ``modified``: the entry's own HMAC does not match its content;
- ``inserted``: the entry's HMAC is wrong and the next entry continues from the one before;
- ``removed``: the entry's predecessor hash belongs to no entry (or a gap in numbering);
- ``reordered``: the entry's predecessor is an entry that comes later;
- ``truncated``: the chain ends before the head / a checkpoint says it should;
- ``checkpoint``: a checkpoint's signature is invalid or disagrees with the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64

# Columns that make up an entry's hashed content (everything but seq, prev_hash, hash).
CONTENT_FIELDS = (
    "recorded", "action", "outcome", "subject", "role", "organization_id", "source_id",
    "purpose", "emergency", "resource_type", "entities", "patients", "persons", "query",
    "detail",
)

# AuditEvent.outcome codes (FHIR R4).
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = "0", "4", "8", "12"


@dataclass(frozen=True)
class AuditRecord:
    """One thing to record.  Only opaque ids; never names, IINs, phones."""

    action: str  # read vread search history create update patch delete export login
    #              break-glass denied alert everything consent review
    outcome: str = SUCCESS
    subject: str | None = None
    role: str | None = None
    organization_id: str | None = None
    source_id: str | None = None
    purpose: str | None = None
    emergency: bool = False
    resource_type: str | None = None
    entities: tuple[str, ...] = ()  # "Type/id"
    patients: tuple[str, ...] = ()
    persons: tuple[str, ...] = ()
    query: str | None = None
    detail: str | None = None


# Encoders built once (json.dumps with options builds one per call).
_LIST = json.JSONEncoder(separators=(",", ":")).encode
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def content_of(record: AuditRecord, recorded: str) -> dict[str, Any]:
    return {
        "recorded": recorded,
        "action": record.action,
        "outcome": record.outcome,
        "subject": record.subject,
        "role": record.role,
        "organization_id": record.organization_id,
        "source_id": record.source_id,
        "purpose": record.purpose,
        "emergency": bool(record.emergency),
        "resource_type": record.resource_type,
        "entities": _LIST(list(record.entities)),
        "patients": _LIST(sorted(set(record.patients))),
        "persons": _LIST(sorted(set(record.persons))),
        "query": record.query,
        "detail": record.detail,
    }


def canonical(content: dict[str, Any]) -> bytes:
    norm = {k: content.get(k) for k in CONTENT_FIELDS}
    norm["emergency"] = bool(norm["emergency"])
    return _CANONICAL(norm).encode()


def chain_hash(key: bytes, prev_hash: str, content: dict[str, Any]) -> str:
    message = prev_hash.encode() + b"\n" + canonical(content)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def checkpoint_message(seq: int, hash_: str, signed_at: str) -> bytes:
    return f"{seq}|{hash_}|{signed_at}".encode()


def redact_query(query: str | None) -> str | None:
    """Keep search parameter names and modifiers, never values (they may be IINs)."""
    if not query:
        return None
    from urllib.parse import parse_qsl

    names = [k for k, _ in parse_qsl(query.lstrip("?"), keep_blank_values=True)]
    return "&".join(f"{n}=*" for n in names)[:2000] or None


@dataclass(frozen=True)
class StoredEntry:
    seq: int
    content: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class StoredCheckpoint:
    seq: int
    hash: str
    signed_at: str
    kid: str
    signature: str


@dataclass
class VerifyReport:
    ok: bool = True
    entries: int = 0
    checkpoints: int = 0
    problem: str | None = None  # modified | inserted | removed | reordered | truncated | …
    seq: int | None = None  # the first entry concerned
    message: str = ""
    last_seq: int = 0
    last_hash: str = GENESIS
    checkpoint_hashes: dict[int, str] = field(default_factory=dict)

    def fail(self, problem: str, seq: int | None, message: str) -> VerifyReport:
        self.ok, self.problem, self.seq, self.message = False, problem, seq, message
        return self


def _peekable(items: Iterable[StoredEntry]) -> Iterator[tuple[StoredEntry, StoredEntry | None]]:
    it = iter(items)
    cur = next(it, None)
    while cur is not None:
        nxt = next(it, None)
        yield cur, nxt
        cur = nxt


def verify_chain(
    entries: Iterable[StoredEntry],
    key: bytes,
    *,
    seq_of_hash: Callable[[str], int | None],
    checkpoint_seqs: frozenset[int] = frozenset(),
) -> VerifyReport:
    """Walk the chain in seq order; stop at the first problem (see module docstring)."""
    report = VerifyReport()
    prev = GENESIS
    expected_seq = 1
    for e, nxt in _peekable(entries):
        report.entries += 1
        if chain_hash(key, e.prev_hash, e.content) != e.hash:
            # The next entry continues from our predecessor: this one was slipped in.
            if nxt is not None and nxt.prev_hash == prev:
                return report.fail("inserted", e.seq,
                                   f"entry {e.seq} was inserted (not part of the chain)")
            return report.fail("modified", e.seq, f"entry {e.seq} was modified")
        if e.prev_hash != prev:
            j = seq_of_hash(e.prev_hash)
            if j is not None and j > e.seq:
                return report.fail("reordered", e.seq,
                                   f"entry {e.seq} is out of order (it follows entry {j})")
            if j is not None and j < e.seq and j != report.last_seq:
                return report.fail("reordered", e.seq,
                                   f"entry {e.seq} is out of order (it follows entry {j})")
            return report.fail("removed", expected_seq,
                               f"entry {expected_seq} (before entry {e.seq}) was removed")
        if e.seq != expected_seq:
            return report.fail("removed", expected_seq,
                               f"entry {expected_seq} is missing from the numbering")
        if e.seq in checkpoint_seqs:
            report.checkpoint_hashes[e.seq] = e.hash
        prev = e.hash
        report.last_seq, report.last_hash = e.seq, e.hash
        expected_seq = e.seq + 1
    return report
