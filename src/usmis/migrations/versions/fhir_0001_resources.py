"""fhir: encrypted versioned resource store (current + superseded versions)

Revision ID: fhir_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fhir_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("fhir",)
depends_on: str | Sequence[str] | None = None


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("source_id", sa.String(64)),
        sa.Column("author_org", sa.String(64)),
        sa.Column("sensitivity", sa.String(32)),
        sa.Column("kek_id", sa.String(64)),
        sa.Column("dek", sa.LargeBinary),
        sa.Column("body", sa.LargeBinary),
    ]


def upgrade() -> None:
    op.create_table(
        "fhir_resource",
        *_columns(),
        sa.PrimaryKeyConstraint("resource_type", "id", name="pk_fhir_resource"),
    )
    op.create_index("ix_fhir_resource_patient", "fhir_resource", ["patient_id", "resource_type"])
    op.create_index("ix_fhir_resource_updated", "fhir_resource", ["last_updated"])
    op.create_index(
        "ix_fhir_resource_type_updated", "fhir_resource", ["resource_type", "last_updated"]
    )
    op.create_table(
        "fhir_resource_history",
        *_columns(),
        sa.PrimaryKeyConstraint(
            "resource_type", "id", "version_id", name="pk_fhir_resource_history"
        ),
    )
    op.create_index(
        "ix_fhir_resource_history_updated", "fhir_resource_history", ["last_updated"]
    )


def downgrade() -> None:
    op.drop_table("fhir_resource_history")
    op.drop_table("fhir_resource")
