"""fhir_search: the reference identifier index holds only references that carry one

Most references carry no identifier (three in four in an HL7 feed), yet each put a null
entry into ``ix_fhir_idx_reference_ident``; the only query of that index asks for an
identifier value, which a partial index (``id_value IS NOT NULL``) answers the same.

Revision ID: fhir_search_0003
Revises: fhir_search_0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fhir_search_0003"
down_revision: str | Sequence[str] | None = "fhir_search_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ["res_type", "param", "id_value"]


def upgrade() -> None:
    op.drop_index("ix_fhir_idx_reference_ident", table_name="fhir_idx_reference")
    where = sa.text("id_value IS NOT NULL")
    op.create_index("ix_fhir_idx_reference_ident", "fhir_idx_reference", _COLUMNS,
                    postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    op.drop_index("ix_fhir_idx_reference_ident", table_name="fhir_idx_reference")
    op.create_index("ix_fhir_idx_reference_ident", "fhir_idx_reference", _COLUMNS)
