"""fhir_search: free text is stored blind

Token display texts (``fhir_idx_token.text``, for the ``:text`` modifier) and the string
parameters that hold free text (``registry.FREE_TEXT``: abatement-string, onset-info,
value-string, description, disposition) were kept in plaintext, case-folded — and a note
naming the patient ("pulse of <name>") put the name in the database in the clear.  They
are now keyed HMACs of words, which a migration cannot compute (the key lives outside the
database): the plaintext is erased here, and ``usmis db reindex`` writes them again,
blind.  Until it has run, ``:text`` and those parameters miss the resources written
before.  Downgrade restores nothing: the plaintext is gone, by design.

(``fhir_search_0004`` was a revision tried and reverted in development; its id is not
reused.)

Revision ID: fhir_search_0005
Revises: fhir_search_0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "fhir_search_0005"
down_revision: str | Sequence[str] | None = "fhir_search_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FREE_TEXT = ("abatement-string", "onset-info", "value-string", "description", "disposition")


def upgrade() -> None:
    op.execute("UPDATE fhir_idx_token SET text = NULL WHERE text IS NOT NULL")
    names = ", ".join(f"'{n}'" for n in FREE_TEXT)
    op.execute(f"DELETE FROM fhir_idx_string WHERE param IN ({names})")


def downgrade() -> None:
    pass
