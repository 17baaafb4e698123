"""audit: how far each process's read spool has reached the chain

Revision ID: audit_0002
Revises: audit_0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "audit_0002"
down_revision: str | Sequence[str] | None = "audit_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_spool",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_audit_spool"),
    )


def downgrade() -> None:
    op.drop_table("audit_spool")
