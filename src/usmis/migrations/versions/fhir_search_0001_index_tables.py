"""fhir_search: typed search-index tables (token, string, date, reference, quantity)

Revision ID: fhir_search_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fhir_search_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("fhir_search",)
depends_on: str | Sequence[str] | None = None


def _key() -> list[sa.Column[str]]:
    return [
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "fhir_idx_token",
        *_key(),
        sa.Column("system", sa.String(255)),
        sa.Column("code", sa.String(255), nullable=False),
        sa.Column("text", sa.String(255)),
    )
    op.create_index(
        "ix_fhir_idx_token_lookup", "fhir_idx_token", ["res_type", "param", "code", "system"]
    )
    op.create_index("ix_fhir_idx_token_res", "fhir_idx_token", ["res_type", "res_id", "param"])

    op.create_table(
        "fhir_idx_string",
        *_key(),
        sa.Column("norm", sa.String(255), nullable=False),
        sa.Column("exact", sa.String(255), nullable=False),
    )
    # text_pattern_ops: LIKE 'prefix%' uses the index whatever the database collation
    op.create_index(
        "ix_fhir_idx_string_lookup",
        "fhir_idx_string",
        ["res_type", "param", "norm"],
        postgresql_ops={"norm": "text_pattern_ops"},
    )
    op.create_index("ix_fhir_idx_string_res", "fhir_idx_string", ["res_type", "res_id", "param"])

    op.create_table(
        "fhir_idx_date",
        *_key(),
        sa.Column("low", sa.BigInteger, nullable=False),
        sa.Column("high", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_fhir_idx_date_lookup", "fhir_idx_date", ["res_type", "param", "low", "high"]
    )
    op.create_index("ix_fhir_idx_date_res", "fhir_idx_date", ["res_type", "res_id", "param"])

    op.create_table(
        "fhir_idx_reference",
        *_key(),
        sa.Column("target_type", sa.String(64)),
        sa.Column("target_id", sa.String(64)),
        sa.Column("url", sa.String(255)),
        sa.Column("id_system", sa.String(255)),
        sa.Column("id_value", sa.String(255)),
    )
    op.create_index(
        "ix_fhir_idx_reference_lookup",
        "fhir_idx_reference",
        ["target_id", "param", "res_type", "target_type"],
    )
    op.create_index(
        "ix_fhir_idx_reference_res", "fhir_idx_reference", ["res_type", "res_id", "param"]
    )
    op.create_index(
        "ix_fhir_idx_reference_ident", "fhir_idx_reference", ["res_type", "param", "id_value"]
    )

    op.create_table(
        "fhir_idx_quantity",
        *_key(),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("system", sa.String(255)),
        sa.Column("code", sa.String(255)),
        sa.Column("unit", sa.String(255)),
    )
    op.create_index(
        "ix_fhir_idx_quantity_lookup", "fhir_idx_quantity", ["res_type", "param", "value"]
    )
    op.create_index(
        "ix_fhir_idx_quantity_res", "fhir_idx_quantity", ["res_type", "res_id", "param"]
    )


def downgrade() -> None:
    for t in (
        "fhir_idx_quantity",
        "fhir_idx_reference",
        "fhir_idx_date",
        "fhir_idx_string",
        "fhir_idx_token",
    ):
        op.drop_table(t)
