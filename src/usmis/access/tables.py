"""Tables of the access domain (SQLAlchemy Core on usmis.kit.db.metadata).

All ids are opaque (FHIR logical ids, organization ids, usernames chosen by the operator);
no name, IIN or phone is ever stored here.
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
    Text,
)

from usmis.kit.db import metadata

# Users of the embedded issuer (production: the external OIDC provider holds them).
user = Table(
    "access_user",
    metadata,
    Column("username", String(100), primary_key=True),
    Column("role", String(20), nullable=False),
    Column("organization_id", String(64)),
    Column("speciality", String(64)),
    Column("patient_id", String(64)),
    Column("source_id", String(64)),
    Column("scope", Text, nullable=False),
    Column("password_hash", String(200)),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# OAuth2 clients (client_credentials grant) — the source systems.
client = Table(
    "access_client",
    metadata,
    Column("client_id", String(100), primary_key=True),
    Column("secret_hash", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("source_id", String(64)),
    Column("organization_id", String(64)),
    Column("scope", Text, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Care relationships projected from stored resources at write time (see access/care.py):
# kind = attachment | encounter | referral; valid from start to end (NULL = open).
care_link = Table(
    "access_care_link",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", String(64), nullable=False),
    Column("organization_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("start", DateTime(timezone=True)),
    Column("end", DateTime(timezone=True)),
    Index("ix_access_care_link_org_patient", "organization_id", "patient_id"),
    Index("ix_access_care_link_resource", "resource_type", "resource_id"),
)

# Consent provisions projected from FHIR Consent resources (the Consent is the record).
# kind = deny-category (value: hiv|mental|reproductive|substance) | deny-org (value: org id)
consent_rule = Table(
    "access_consent_rule",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", String(64), nullable=False, index=True),
    Column("consent_id", String(64), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("value", String(64), nullable=False),
)

# Break-the-glass grants: time-limited, reviewed by an auditor, shown to the patient.
emergency_grant = Table(
    "access_emergency_grant",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("subject", String(200), nullable=False),
    Column("organization_id", String(64)),
    Column("patient_id", String(64), nullable=False),
    # Free text typed by a clinician may name someone: sealed like every resource body.
    Column("kek_id", String(64), nullable=False),
    Column("dek", LargeBinary, nullable=False),
    Column("reason", LargeBinary, nullable=False),
    Column("granted_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("reviewed_by", String(200)),
    Column("reviewed_at", DateTime(timezone=True)),
    Column("review_outcome", String(16)),  # justified | unjustified
    Index("ix_access_emergency_grant_subject_patient", "subject", "patient_id"),
)

# Distinct patients touched per principal per hour (exfiltration guard).
usage = Table(
    "access_usage",
    metadata,
    Column("subject", String(200), nullable=False),
    Column("hour", String(13), nullable=False),  # YYYY-MM-DDTHH (UTC)
    Column("patient_id", String(64), nullable=False),
    # On SQLite the table is its key (no rowid): a new patient writes one page, not two.
    PrimaryKeyConstraint("subject", "hour", "patient_id", name="pk_access_usage"),
    sqlite_with_rowid=False,
)

# Principals blocked by the guard (or by an auditor) until an auditor clears them.
block = Table(
    "access_block",
    metadata,
    Column("subject", String(200), primary_key=True),
    Column("reason", String(200), nullable=False),
    Column("blocked_at", DateTime(timezone=True), nullable=False),
    Column("cleared_by", String(200)),
    Column("cleared_at", DateTime(timezone=True)),
)

# Alerts for the auditor (guard trips, break-the-glass declarations).
alert = Table(
    "access_alert",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("organization_id", String(64)),
    Column("detail", String(400), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("acknowledged_by", String(200)),
    Column("acknowledged_at", DateTime(timezone=True)),
)
