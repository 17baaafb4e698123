"""access: the per-patient lookup counts the guard's hour only for a patient new to it

Revision ID: access_0003
Revises: access_0002
Create Date: 2026-11-27

The lookup's SQL changed (usmis.access.repository._facts_sql), so its PL/pgSQL functions
have new hashed names: create them (``CREATE OR REPLACE``, idempotent; PostgreSQL only).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "access_0003"
down_revision: str | Sequence[str] | None = "access_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    from usmis.access.repository import facts_function_ddl

    for ddl in facts_function_ddl():
        op.execute(ddl)


def downgrade() -> None:
    pass  # the older functions are still there; the newer ones are unused without this code
