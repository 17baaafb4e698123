"""fhir_search: an address is stored once, under its narrower parameters

The ``address`` search parameter now reads the union of ``address-city``,
``address-country``, ``address-postalcode``, ``address-state`` and ``~address-other`` (line,
district, text), as ``name`` reads family + given + ``~name-other``: four index rows a
Patient fewer.  Rows written before under ``address`` become ``~address-other`` rows: their
line parts are found there; their city/country parts are then stored twice, which the union
does not mind (it matches resources, not rows).

Revision ID: fhir_search_0002
Revises: fhir_search_0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "fhir_search_0002"
down_revision: str | Sequence[str] | None = "fhir_search_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("fhir_idx_token", "fhir_idx_string"):
        op.execute(f"UPDATE {table} SET param = '~address-other' WHERE param = 'address'")


def downgrade() -> None:
    for table in ("fhir_idx_token", "fhir_idx_string"):
        op.execute(f"UPDATE {table} SET param = 'address' WHERE param = '~address-other'")
