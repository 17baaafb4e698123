"""oversight: runs, findings, cases, notes, feedback, pseudonyms, re-identifications

Revision ID: oversight_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "oversight_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("oversight",)
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(18, 2, asdecimal=False)


def upgrade() -> None:
    op.create_table(
        "oversight_run",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("builder", sa.String(32), nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("rules", sa.Text, nullable=False),
        sa.Column("findings", sa.Integer, nullable=False),
        sa.Column("amount_at_risk", MONEY, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_oversight_run"),
    )
    op.create_table(
        "oversight_finding",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("finding_key", sa.String(32), nullable=False),
        sa.Column("first_run_id", sa.Integer, nullable=False),
        sa.Column("last_run_id", sa.Integer, nullable=False),
        sa.Column("rule_id", sa.String(40), nullable=False),
        sa.Column("rule_version", sa.Integer, nullable=False),
        sa.Column("provider_id", sa.String(64)),
        sa.Column("practitioner_id", sa.String(64)),
        sa.Column("person_pseudonym", sa.String(64)),
        sa.Column("region", sa.String(64)),
        sa.Column("period_start", sa.Date),
        sa.Column("period_end", sa.Date),
        sa.Column("detail", sa.String(64)),
        sa.Column("item_ids", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("amount_at_risk", MONEY, nullable=False),
        sa.Column("likelihood", sa.Float, nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("expected_recovery", MONEY, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_oversight_finding"),
        sa.UniqueConstraint("finding_key", name="uq_oversight_finding_finding_key"),
    )
    op.create_index("ix_oversight_finding_last_run_id", "oversight_finding", ["last_run_id"])
    op.create_index("ix_oversight_finding_rule_id", "oversight_finding", ["rule_id"])
    op.create_index("ix_oversight_finding_provider_id", "oversight_finding", ["provider_id"])
    op.create_table(
        "oversight_case",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opened_by", sa.String(100), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("closed_at", TS),
        sa.Column("recovered_amount", MONEY),
        sa.PrimaryKeyConstraint("id", name="pk_oversight_case"),
    )
    op.create_table(
        "oversight_case_finding",
        sa.Column("case_id", sa.Integer, nullable=False),
        sa.Column("finding_id", sa.Integer, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["oversight_case.id"],
                                name="fk_oversight_case_finding_case_id_oversight_case"),
        sa.ForeignKeyConstraint(["finding_id"], ["oversight_finding.id"],
                                name="fk_oversight_case_finding_finding_id_oversight_finding"),
        sa.PrimaryKeyConstraint("case_id", "finding_id", name="pk_oversight_case_finding"),
    )
    op.create_table(
        "oversight_case_note",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("case_id", sa.Integer, nullable=False),
        sa.Column("author", sa.String(100), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["oversight_case.id"],
                                name="fk_oversight_case_note_case_id_oversight_case"),
        sa.PrimaryKeyConstraint("id", name="pk_oversight_case_note"),
    )
    op.create_index("ix_oversight_case_note_case_id", "oversight_case_note", ["case_id"])
    op.create_table(
        "oversight_feedback",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("case_id", sa.Integer, nullable=False),
        sa.Column("finding_id", sa.Integer, nullable=False),
        sa.Column("rule_id", sa.String(40), nullable=False),
        sa.Column("rule_version", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["oversight_case.id"],
                                name="fk_oversight_feedback_case_id_oversight_case"),
        sa.ForeignKeyConstraint(["finding_id"], ["oversight_finding.id"],
                                name="fk_oversight_feedback_finding_id_oversight_finding"),
        sa.PrimaryKeyConstraint("id", name="pk_oversight_feedback"),
    )
    op.create_index("ix_oversight_feedback_rule_id", "oversight_feedback", ["rule_id"])
    op.create_table(
        "oversight_pseudonym",
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("person_key", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("pseudonym", name="pk_oversight_pseudonym"),
    )
    op.create_table(
        "oversight_reidentification",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("finding_id", sa.Integer, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("kek_id", sa.String(64), nullable=False),
        sa.Column("dek", sa.LargeBinary, nullable=False),
        sa.Column("reason", sa.LargeBinary, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["finding_id"], ["oversight_finding.id"],
            name="fk_oversight_reidentification_finding_id_oversight_finding"),
        sa.PrimaryKeyConstraint("id", name="pk_oversight_reidentification"),
    )
    op.create_table(
        "oversight_watermark",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_updated", TS),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_oversight_watermark"),
    )


def downgrade() -> None:
    for name in (
        "oversight_watermark",
        "oversight_reidentification",
        "oversight_pseudonym",
        "oversight_feedback",
        "oversight_case_note",
        "oversight_case_finding",
        "oversight_case",
        "oversight_finding",
        "oversight_run",
    ):
        op.drop_table(name)
