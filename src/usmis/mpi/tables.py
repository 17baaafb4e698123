"""Tables of the master patient index (SQLAlchemy Core; migration branch "mpi").

No plaintext identifier anywhere:

- ``mpi_person``: the opaque person keys (the unit the unified record is built on).
- ``mpi_link``: the *current* link of each source Patient to a person, with how and how
  sure; beside it the record's normalised match profile, sealed with AES-256-GCM under its
  own data key (:mod:`usmis.kit.crypto`), opened only in memory to compare candidates.
- ``mpi_link_event``: the history — every link, unlink, merge, split, revert, with who or
  what, the score, the reason and the time; ``operation_id`` groups the rows of one
  operation so it can be reverted as a whole.
- ``mpi_block``: keyed-HMAC blocking keys (blind indexes) → source Patient.
- ``mpi_review``: the registrar's queue of uncertain pairs and its decisions.
- ``mpi_model``: trained Fellegi–Sunter weights and thresholds (no personal data).
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from usmis.kit.db import metadata

TS = DateTime(timezone=True)

person = Table(
    "mpi_person",
    metadata,
    Column("person_key", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # active | merged | retired
    Column("merged_into", String(32)),
    Column("created_at", TS, nullable=False),
    PrimaryKeyConstraint("person_key", name="pk_mpi_person"),
)

link = Table(
    "mpi_link",
    metadata,
    Column("patient_id", String(64), nullable=False),
    Column("person_key", String(32), nullable=False),
    Column("source_id", String(64)),
    Column("method", String(24), nullable=False),  # iin | probabilistic | new | manual | …
    Column("score", Float),
    Column("actor", String(100), nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("kek_id", String(64)),
    Column("dek", LargeBinary),
    Column("profile", LargeBinary),
    PrimaryKeyConstraint("patient_id", name="pk_mpi_link"),
    Index("ix_mpi_link_person", "person_key"),
)

link_event = Table(
    "mpi_link_event",
    metadata,
    Column("id", Integer, autoincrement=True, nullable=False),
    Column("operation_id", String(32), nullable=False),
    Column("action", String(16), nullable=False),  # link | unlink | merge | split | revert | …
    Column("patient_id", String(64)),
    Column("person_key", String(32)),
    Column("previous_person_key", String(32)),
    Column("method", String(24)),
    Column("score", Float),
    Column("reason", Text),
    Column("actor", String(100), nullable=False),
    Column("at", TS, nullable=False),
    PrimaryKeyConstraint("id", name="pk_mpi_link_event"),
    Index("ix_mpi_link_event_patient", "patient_id"),
    Index("ix_mpi_link_event_operation", "operation_id"),
)

block = Table(
    "mpi_block",
    metadata,
    Column("key", String(32), nullable=False),
    Column("patient_id", String(64), nullable=False),
    PrimaryKeyConstraint("key", "patient_id", name="pk_mpi_block"),
    Index("ix_mpi_block_patient", "patient_id"),
)

review = Table(
    "mpi_review",
    metadata,
    Column("id", Integer, autoincrement=True, nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("candidate_person_key", String(32), nullable=False),
    Column("score", Float, nullable=False),
    Column("status", String(16), nullable=False),  # open | linked | not-linked | obsolete
    Column("created_at", TS, nullable=False),
    Column("decided_at", TS),
    Column("decided_by", String(100)),
    Column("reason", Text),
    PrimaryKeyConstraint("id", name="pk_mpi_review"),
    Index("ix_mpi_review_status", "status", "id"),
    Index("ix_mpi_review_patient", "patient_id"),
)

model = Table(
    "mpi_model",
    metadata,
    Column("id", Integer, autoincrement=True, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("params", Text, nullable=False),
    PrimaryKeyConstraint("id", name="pk_mpi_model"),
)
