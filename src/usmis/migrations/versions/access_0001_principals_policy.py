"""access: users, clients, care links, consent rules, emergency grants, guard

Revision ID: access_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "access_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("access",)
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "access_user",
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("organization_id", sa.String(64)),
        sa.Column("speciality", sa.String(64)),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("source_id", sa.String(64)),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("password_hash", sa.String(200)),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_access_user"),
    )
    op.create_table(
        "access_client",
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("secret_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("source_id", sa.String(64)),
        sa.Column("organization_id", sa.String(64)),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_access_client"),
    )
    op.create_table(
        "access_care_link",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("start", TS),
        sa.Column("end", TS),
        sa.PrimaryKeyConstraint("id", name="pk_access_care_link"),
    )
    op.create_index(
        "ix_access_care_link_org_patient", "access_care_link", ["organization_id", "patient_id"]
    )
    op.create_index(
        "ix_access_care_link_resource", "access_care_link", ["resource_type", "resource_id"]
    )
    op.create_table(
        "access_consent_rule",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_consent_rule"),
    )
    op.create_index(
        "ix_access_consent_rule_patient_id", "access_consent_rule", ["patient_id"]
    )
    op.create_index(
        "ix_access_consent_rule_consent_id", "access_consent_rule", ["consent_id"]
    )
    op.create_table(
        "access_emergency_grant",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("organization_id", sa.String(64)),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("kek_id", sa.String(64), nullable=False),
        sa.Column("dek", sa.LargeBinary, nullable=False),
        sa.Column("reason", sa.LargeBinary, nullable=False),
        sa.Column("granted_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("reviewed_by", sa.String(200)),
        sa.Column("reviewed_at", TS),
        sa.Column("review_outcome", sa.String(16)),
        sa.PrimaryKeyConstraint("id", name="pk_access_emergency_grant"),
    )
    op.create_index(
        "ix_access_emergency_grant_subject_patient",
        "access_emergency_grant",
        ["subject", "patient_id"],
    )
    op.create_table(
        "access_usage",
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("hour", sa.String(13), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("subject", "hour", "patient_id", name="pk_access_usage"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "access_block",
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("blocked_at", TS, nullable=False),
        sa.Column("cleared_by", sa.String(200)),
        sa.Column("cleared_at", TS),
        sa.PrimaryKeyConstraint("subject", name="pk_access_block"),
    )
    op.create_table(
        "access_alert",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("organization_id", sa.String(64)),
        sa.Column("detail", sa.String(400), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("acknowledged_by", sa.String(200)),
        sa.Column("acknowledged_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_access_alert"),
    )


def downgrade() -> None:
    for name in (
        "access_alert",
        "access_block",
        "access_usage",
        "access_emergency_grant",
        "access_consent_rule",
        "access_care_link",
        "access_client",
        "access_user",
    ):
        op.drop_table(name)
