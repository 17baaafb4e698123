"""The resource store: current versions and superseded versions (SQLAlchemy Core).

Both tables hold the whole resource JSON only as AES-256-GCM ciphertext (``body``) under a
per-record data key (``dek``, wrapped by KEK ``kek_id``, see :mod:`usmis.kit.crypto`).
The only plaintext columns are opaque ids the policy and the search need:

- ``patient_id``: id of the Patient whose compartment the resource is in (or NULL),
- ``source_id``: the source system that wrote it, ``author_org``: its organization id,
- ``sensitivity``: a consent category (``hiv``, ``mental``, …) or NULL.

``fhir_resource`` has one row per resource (the newest version, also for deleted ones:
``deleted`` true, ``body`` NULL).  ``fhir_resource_history`` has the *superseded*
versions only, so a create is one insert (ingest speed); vread/history union both.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
)

from usmis.kit.db import metadata


def _columns() -> list[Column[object]]:
    return [
        Column("resource_type", String(64), nullable=False),
        Column("id", String(64), nullable=False),
        Column("version_id", Integer, nullable=False),
        Column("last_updated", DateTime(timezone=True), nullable=False),
        Column("deleted", Boolean, nullable=False, default=False),
        Column("patient_id", String(64)),
        Column("source_id", String(64)),
        Column("author_org", String(64)),
        Column("sensitivity", String(32)),
        Column("kek_id", String(64)),
        Column("dek", LargeBinary),
        Column("body", LargeBinary),
    ]


resource = Table(
    "fhir_resource",
    metadata,
    *_columns(),
    PrimaryKeyConstraint("resource_type", "id", name="pk_fhir_resource"),
    Index("ix_fhir_resource_patient", "patient_id", "resource_type"),
    Index("ix_fhir_resource_updated", "last_updated"),
    Index("ix_fhir_resource_type_updated", "resource_type", "last_updated"),
)

resource_history = Table(
    "fhir_resource_history",
    metadata,
    *_columns(),
    PrimaryKeyConstraint("resource_type", "id", "version_id", name="pk_fhir_resource_history"),
    Index("ix_fhir_resource_history_updated", "last_updated"),
)

# The search index tables (owned by usmis.fhir.search) live on the same metadata.
from usmis.fhir.search import tables as search_tables  # noqa: E402, F401
