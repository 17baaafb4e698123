"""audit: hash-chained entries, patient index, chain head, signed checkpoints

Revision ID: audit_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "audit_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("audit",)
depends_on: str | Sequence[str] | None = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_entry",
        sa.Column("seq", Seq, nullable=False, autoincrement=False),
        sa.Column("recorded", sa.String(32), nullable=False),
        sa.Column("action", sa.String(24), nullable=False),
        sa.Column("outcome", sa.String(2), nullable=False),
        sa.Column("subject", sa.String(200)),
        sa.Column("role", sa.String(20)),
        sa.Column("organization_id", sa.String(64)),
        sa.Column("source_id", sa.String(64)),
        sa.Column("purpose", sa.String(32)),
        sa.Column("emergency", sa.Boolean, nullable=False),
        sa.Column("resource_type", sa.String(64)),
        sa.Column("entities", sa.Text, nullable=False),
        sa.Column("patients", sa.Text, nullable=False),
        sa.Column("persons", sa.Text, nullable=False),
        sa.Column("query", sa.Text),
        sa.Column("detail", sa.Text),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_entry"),
    )
    op.create_index("ix_audit_entry_subject", "audit_entry", ["subject", "seq"])
    op.create_index("ix_audit_entry_recorded", "audit_entry", ["recorded"])
    op.create_table(
        "audit_patient",
        sa.Column("seq", Seq, nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("patient_id", "seq", name="pk_audit_patient"),
        sqlite_with_rowid=False,
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("seq", Seq, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])
    op.create_table(
        "audit_checkpoint",
        sa.Column("seq", Seq, nullable=False, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("signed_at", sa.String(32), nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_checkpoint"),
    )


def downgrade() -> None:
    for name in ("audit_checkpoint", "audit_head", "audit_patient", "audit_entry"):
        op.drop_table(name)
