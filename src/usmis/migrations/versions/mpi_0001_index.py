"""mpi: persons, links with history, HMAC blocking keys, review queue, trained model

Revision ID: mpi_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "mpi_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("mpi",)
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mpi_person",
        sa.Column("person_key", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("merged_into", sa.String(32)),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("person_key", name="pk_mpi_person"),
    )
    op.create_table(
        "mpi_link",
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("person_key", sa.String(32), nullable=False),
        sa.Column("source_id", sa.String(64)),
        sa.Column("method", sa.String(24), nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("kek_id", sa.String(64)),
        sa.Column("dek", sa.LargeBinary),
        sa.Column("profile", sa.LargeBinary),
        sa.PrimaryKeyConstraint("patient_id", name="pk_mpi_link"),
    )
    op.create_index("ix_mpi_link_person", "mpi_link", ["person_key"])
    op.create_table(
        "mpi_link_event",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("operation_id", sa.String(32), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("person_key", sa.String(32)),
        sa.Column("previous_person_key", sa.String(32)),
        sa.Column("method", sa.String(24)),
        sa.Column("score", sa.Float),
        sa.Column("reason", sa.Text),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mpi_link_event"),
    )
    op.create_index("ix_mpi_link_event_patient", "mpi_link_event", ["patient_id"])
    op.create_index("ix_mpi_link_event_operation", "mpi_link_event", ["operation_id"])
    op.create_table(
        "mpi_block",
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("key", "patient_id", name="pk_mpi_block"),
    )
    op.create_index("ix_mpi_block_patient", "mpi_block", ["patient_id"])
    op.create_table(
        "mpi_review",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("candidate_person_key", sa.String(32), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("decided_at", TS),
        sa.Column("decided_by", sa.String(100)),
        sa.Column("reason", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_mpi_review"),
    )
    op.create_index("ix_mpi_review_status", "mpi_review", ["status", "id"])
    op.create_index("ix_mpi_review_patient", "mpi_review", ["patient_id"])
    op.create_table(
        "mpi_model",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mpi_model"),
    )


def downgrade() -> None:
    for name in ("mpi_model", "mpi_review", "mpi_block", "mpi_link_event", "mpi_link"):
        op.drop_table(name)
    op.drop_table("mpi_person")
