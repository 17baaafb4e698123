"""Tables of the audit log (SQLAlchemy Core on usmis.kit.db.metadata).

- ``audit_entry``: the append-only hash chain.  Each entry's ``hash`` is an HMAC-SHA256
  (key outside the database) over its predecessor's hash and its own content, so nobody
  with only database access can change, drop, insert or reorder entries unnoticed.
- ``audit_patient``: which Patients an entry concerns (lookup for "who accessed my
  record"; the same ids are inside the hashed content, so the index can be checked).
- ``audit_head``: one row (id 1): the newest entry's seq and hash.  Appends update it
  first, which serialises them on both backends (a row lock on PostgreSQL, the write lock
  on SQLite) and gives each append its predecessor.
- ``audit_checkpoint``: Ed25519 signatures of the chain head, written every
  ``audit_checkpoint_every`` entries and on demand.
- ``audit_spool``: for each spool file of read entries (:mod:`usmis.audit.spool`), the byte
  offset up to which its entries are in the chain — moved in the same transaction as
  the entries, so a replay after a crash neither loses nor repeats one.

Only opaque ids are stored: usernames/subjects, organization ids, FHIR logical ids, person
keys.  Never names, IINs or phones.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from usmis.kit.db import metadata

Seq = BigInteger().with_variant(Integer(), "sqlite")

entry = Table(
    "audit_entry",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=False),
    Column("recorded", String(32), nullable=False),  # ISO 8601 UTC, microseconds
    Column("action", String(24), nullable=False),
    Column("outcome", String(2), nullable=False),  # AuditEvent.outcome: 0 4 8 12
    Column("subject", String(200)),
    Column("role", String(20)),
    Column("organization_id", String(64)),
    Column("source_id", String(64)),
    Column("purpose", String(32)),
    Column("emergency", Boolean, nullable=False),
    Column("resource_type", String(64)),
    Column("entities", Text, nullable=False),  # JSON list of "Type/id"
    Column("patients", Text, nullable=False),  # JSON list of Patient ids
    Column("persons", Text, nullable=False),  # JSON list of opaque person keys
    Column("query", Text),  # parameter names only, never values
    Column("detail", Text),  # reason codes, counts
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_entry_subject", "subject", "seq"),
    Index("ix_audit_entry_recorded", "recorded"),
)

patient = Table(
    "audit_patient",
    metadata,
    Column("seq", Seq, nullable=False),
    Column("patient_id", String(64), nullable=False),
    # The key is the lookup ("who accessed my record"); on SQLite the table is that index
    # (no rowid): an append writes one page for it, not two.
    PrimaryKeyConstraint("patient_id", "seq", name="pk_audit_patient"),
    sqlite_with_rowid=False,
)

head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Seq, nullable=False),
    Column("hash", String(64), nullable=False),
)

checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("signed_at", String(32), nullable=False),
    Column("kid", String(64), nullable=False),
    Column("signature", String(200), nullable=False),
)

spool = Table(
    "audit_spool",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("offset", BigInteger, nullable=False),
)
