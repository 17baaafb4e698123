"""ingest: sources, durable inbox, dead letters, merges, record clocks

Revision ID: ingest_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ingest_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("ingest",)
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ingest_source",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("channels", sa.JSON, nullable=False),
        sa.Column("formats", sa.JSON, nullable=False),
        sa.Column("mapping", sa.String(100)),
        sa.Column("token_hash", sa.String(64)),
        sa.Column("mllp_peers", sa.JSON, nullable=False),
        sa.Column("mllp_secret_hash", sa.String(64)),
        sa.Column("cert_fingerprint", sa.String(64)),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_source"),
    )
    op.create_table(
        "ingest_inbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("format", sa.String(20), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("kek_id", sa.String(64)),
        sa.Column("dek", sa.LargeBinary),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("context", sa.JSON),
        sa.Column("event_time", TS),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("processed_at", TS),
        sa.Column("stored", sa.Integer),
        sa.Column("iin_status", sa.String(8)),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_inbox"),
        sa.UniqueConstraint("source_id", "content_hash", name="uq_ingest_inbox_source_hash"),
    )
    op.create_index("ix_ingest_inbox_status_id", "ingest_inbox", ["status", "id"])
    op.create_table(
        "ingest_dead_letter",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("inbox_id", sa.BigInteger, nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(60), nullable=False),
        sa.Column("field", sa.String(120), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("resolved_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_dead_letter"),
    )
    op.create_index("ix_ingest_dead_letter_inbox_id", "ingest_dead_letter", ["inbox_id"])
    op.create_index(
        "ix_ingest_dead_letter_source_rule", "ingest_dead_letter", ["source_id", "rule"]
    )
    op.create_table(
        "ingest_merge",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("survivor_patient", sa.String(64), nullable=False),
        sa.Column("merged_patient", sa.String(64), nullable=False),
        sa.Column("inbox_id", sa.BigInteger, nullable=False),
        sa.Column("event_time", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_merge"),
        sa.UniqueConstraint("inbox_id", name="uq_ingest_merge_inbox"),
    )
    op.create_table(
        "ingest_file",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("header", sa.JSON),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_file"),
        sa.UniqueConstraint("source_id", "content_hash", name="uq_ingest_file_source_hash"),
    )
    op.create_table(
        "ingest_record_clock",
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("record_key", sa.String(64), nullable=False),
        sa.Column("event_time", TS, nullable=False),
        sa.Column("inbox_id", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("source_id", "record_key", name="pk_ingest_record_clock"),
    )


def downgrade() -> None:
    for name in (
        "ingest_record_clock",
        "ingest_file",
        "ingest_merge",
        "ingest_dead_letter",
        "ingest_inbox",
        "ingest_source",
    ):
        op.drop_table(name)
