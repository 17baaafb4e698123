"""access: the policy's SQL as PL/pgSQL functions (PostgreSQL only)

Revision ID: access_0002
Revises: access_0001
Create Date: 2026-11-27

The search predicate (usmis.access.policy_sql) and the per-patient lookup that rides along
with the store's reads (usmis.access.repository.facts_expression), generated from the same
SQL the code would otherwise send; their
names carry a hash of their body, so a later change of the rule adds a migration that runs
``pg_function_ddl()`` again, and a database without it fails loudly instead of running an
outdated rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "access_0002"
down_revision: str | Sequence[str] | None = "access_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    from usmis.access.policy_sql import pg_function_ddl
    from usmis.access.repository import facts_function_ddl

    for ddl in pg_function_ddl() + facts_function_ddl():
        op.execute(ddl)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        "DO $$ DECLARE f record; BEGIN FOR f IN SELECT oid::regprocedure AS sig FROM pg_proc "
        "WHERE proname LIKE 'usmis\\_%' LOOP EXECUTE 'DROP FUNCTION ' || f.sig; END LOOP; END $$"
    )
