"""The audit log: append in the caller's transaction, checkpoint, verify.

``append`` runs on the boundary's connection, so an entry commits with the work it records
or not at all; if it cannot be written, the exception aborts the work too.  Appends are
serialised by the chain-head row (``repository.advance_head``), which they touch last
thing before commit to keep the serialised section short.
"""

from __future__ import annotations

import json
import weakref
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from sqlalchemy import Connection, Engine

from usmis.audit import keys as audit_keys
from usmis.audit import repository as repo
from usmis.audit.model import (
    SERIOUS_FAILURE,
    SUCCESS,
    AuditRecord,
    VerifyReport,
    chain_hash,
    checkpoint_message,
    content_of,
    verify_chain,
)
from usmis.config import Settings
from usmis.kit.logging import get_logger

if TYPE_CHECKING:
    from usmis.access.model import Principal

log = get_logger(__name__)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# The last head this process wrote, per engine: usually still the head at the next
# append, which then is one compare-and-swap statement (with the entry, on PostgreSQL).
# A wrong guess (another process appended, or our transaction rolled back) writes nothing
# and falls back to taking the head row.
_LAST_HEAD: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def append(conn: Connection, settings: Settings, record: AuditRecord) -> int:
    """Append one entry to the chain (same transaction as the caller's work); its seq."""
    keys = audit_keys.load(settings)
    content = content_of(record, now_iso())
    patients = sorted(set(record.patients))
    guess = _LAST_HEAD.get(conn.engine)
    seq: int | None = None
    if guess is not None:
        digest = chain_hash(keys.chain_key, guess, content)
        seq = repo.swap_append(conn, {**content, "prev_hash": guess, "hash": digest}, patients)
    if seq is None:
        seq, prev = repo.advance_head(conn)
        digest = chain_hash(keys.chain_key, prev, content)
        repo.locked_append(conn, seq, {**content, "prev_hash": prev, "hash": digest}, patients)
    _LAST_HEAD[conn.engine] = digest
    every = settings.audit_checkpoint_every
    if every > 0 and seq % every == 0:
        _checkpoint(conn, settings, seq, digest)
    return seq


def append_many(conn: Connection, settings: Settings, contents: list[dict[str, Any]],
                spool: tuple[str, int]) -> int:
    """Append entries whose content is already built (``content_of``), in order, in the
    caller's transaction, and move the read spool's mark to ``(name, offset)``: three
    statements for the lot.  The last seq."""
    keys = audit_keys.load(settings)
    first, prev = repo.advance_head_by(conn, len(contents))
    entries: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    for seq, content in enumerate(contents, start=first):
        digest = chain_hash(keys.chain_key, prev, content)
        entries.append({**content, "seq": seq, "prev_hash": prev, "hash": digest})
        index.extend({"seq": seq, "patient_id": p} for p in json.loads(content["patients"]))
        prev = digest
    repo.insert_entries(conn, entries, index, spool)
    repo.set_head_hash(conn, prev)
    _LAST_HEAD[conn.engine] = prev
    every = settings.audit_checkpoint_every
    for e in entries:
        if every > 0 and e["seq"] % every == 0:
            _checkpoint(conn, settings, e["seq"], e["hash"])
    return first + len(contents) - 1


def _checkpoint(conn: Connection, settings: Settings, seq: int, digest: str) -> None:
    keys = audit_keys.load(settings)
    signed_at = now_iso()
    repo.insert_checkpoint(
        conn,
        {
            "seq": seq,
            "hash": digest,
            "signed_at": signed_at,
            "kid": keys.kid,
            "signature": keys.sign(checkpoint_message(seq, digest, signed_at)),
        },
    )


def checkpoint(conn: Connection, settings: Settings) -> int:
    """Sign the current chain head now (no-op if it is already signed); its seq."""
    seq, digest = repo.get_head(conn)
    if seq == 0:
        return 0
    if any(c.seq == seq for c in repo.checkpoints(conn)):
        return seq
    _checkpoint(conn, settings, seq, digest)
    return seq


def record_login(
    conn: Connection, settings: Settings, principal: Principal, *, outcome: str
) -> None:
    """A token issuance ("login") by the embedded issuer."""
    if not settings.audit_enabled:
        return
    append(
        conn,
        settings,
        AuditRecord(
            action="login",
            outcome=SUCCESS if outcome == "success" else SERIOUS_FAILURE,
            subject=principal.subject,
            role=principal.role.value,
            organization_id=principal.organization_id,
            source_id=principal.source_id,
            purpose=principal.purpose,
            patients=(principal.patient_id,) if principal.patient_id else (),
            detail=json.dumps({"jti": principal.token_id, "scope": principal.scope_string()}),
        ),
    )


def verify(conn: Connection, settings: Settings) -> VerifyReport:
    """Check the whole chain, the head, every checkpoint and the patient index."""
    keys = audit_keys.load(settings)
    cps = repo.checkpoints(conn)
    report = verify_chain(
        repo.iter_entries(conn),
        keys.chain_key,
        seq_of_hash=lambda h: repo.seq_of_hash(conn, h),
        checkpoint_seqs=frozenset(c.seq for c in cps),
    )
    report.checkpoints = len(cps)
    if not report.ok:
        return report
    # Checkpoints: a valid signature, and the chain still has that hash at that seq.
    for cp in cps:
        pub = keys.public.get(cp.kid)
        try:
            if pub is None:
                raise InvalidSignature
            import base64

            pub.verify(base64.b64decode(cp.signature), checkpoint_message(cp.seq, cp.hash,
                                                                           cp.signed_at))
        except (InvalidSignature, ValueError):
            return report.fail("checkpoint", cp.seq,
                               f"checkpoint at entry {cp.seq} has an invalid signature")
        if cp.seq > report.last_seq:
            return report.fail("truncated", report.last_seq + 1,
                               f"entries from {report.last_seq + 1} on were removed "
                               f"(checkpoint at {cp.seq})")
        if report.checkpoint_hashes.get(cp.seq) != cp.hash:
            return report.fail("modified", cp.seq,
                               f"the chain up to entry {cp.seq} was rewritten "
                               "(disagrees with its signed checkpoint)")
    head_seq, head_hash = repo.get_head(conn)
    if head_seq > report.last_seq:
        return report.fail("truncated", report.last_seq + 1,
                           f"entries from {report.last_seq + 1} on were removed (head at "
                           f"{head_seq})")
    if head_seq != report.last_seq or head_hash != report.last_hash:
        return report.fail("head", head_seq, "the chain head row was altered")
    # The patient index must say exactly what the hashed entries say.
    indexed: dict[int, list[str]] = {}
    for seq, pid in repo.iter_patient_index(conn):
        indexed.setdefault(seq, []).append(pid)
    for e in repo.iter_entries(conn):
        if sorted(json.loads(e.content["patients"])) != indexed.pop(e.seq, []):
            return report.fail("index", e.seq, f"the patient index of entry {e.seq} was altered")
    if indexed:
        seq = min(indexed)
        return report.fail("index", seq, f"the patient index has rows for no entry ({seq})")
    return report
