"""Oversight tables: runs, findings, cases, notes, per-rule feedback, re-identifications.

Findings keep a stable ``finding_key`` (a hash of rule, provider, practitioner, person,
period and claim ids) so a finding found again by a later run is the same row, and the
cases opened on it stay attached.  ``person_pseudonym`` is the extract's keyed-HMAC person
key; ``oversight_pseudonym`` maps it back to the patient index's (itself opaque) person key
and is read only by the audited re-identification.
"""

from __future__ import annotations

import sqlalchemy as sa

from usmis.kit.db import metadata

TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(18, 2, asdecimal=False)

oversight_run = sa.Table(
    "oversight_run",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("finished_at", TS),
    sa.Column("builder", sa.String(32), nullable=False),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("rules", sa.Text, nullable=False),  # JSON: [{id, version, findings, seconds}]
    sa.Column("findings", sa.Integer, nullable=False, default=0),
    sa.Column("amount_at_risk", MONEY, nullable=False, default=0),
)

oversight_finding = sa.Table(
    "oversight_finding",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("finding_key", sa.String(32), nullable=False, unique=True),
    sa.Column("first_run_id", sa.Integer, nullable=False),
    sa.Column("last_run_id", sa.Integer, nullable=False, index=True),
    sa.Column("rule_id", sa.String(40), nullable=False, index=True),
    sa.Column("rule_version", sa.Integer, nullable=False),
    sa.Column("provider_id", sa.String(64), index=True),
    sa.Column("practitioner_id", sa.String(64)),
    sa.Column("person_pseudonym", sa.String(64)),
    sa.Column("region", sa.String(64)),
    sa.Column("period_start", sa.Date),
    sa.Column("period_end", sa.Date),
    sa.Column("detail", sa.String(64)),
    sa.Column("item_ids", sa.Text, nullable=False),  # JSON list of claim/attachment ids
    sa.Column("evidence", sa.Text, nullable=False),  # JSON evidence rows
    sa.Column("amount_at_risk", MONEY, nullable=False),
    sa.Column("likelihood", sa.Float, nullable=False),
    sa.Column("score", sa.Float),
    sa.Column("expected_recovery", MONEY, nullable=False),
)

oversight_case = sa.Table(
    "oversight_case",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("opened_by", sa.String(100), nullable=False),
    sa.Column("opened_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("closed_at", TS),
    sa.Column("recovered_amount", MONEY),
)

oversight_case_finding = sa.Table(
    "oversight_case_finding",
    metadata,
    sa.Column("case_id", sa.Integer, sa.ForeignKey("oversight_case.id"), primary_key=True),
    sa.Column("finding_id", sa.Integer, sa.ForeignKey("oversight_finding.id"), primary_key=True),
)

oversight_case_note = sa.Table(
    "oversight_case_note",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("oversight_case.id"), nullable=False,
              index=True),
    sa.Column("author", sa.String(100), nullable=False),
    sa.Column("at", TS, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # note | status
    sa.Column("text", sa.Text, nullable=False),
)

# The outcome of a closed case, per finding and rule: what tunes each rule's likelihood.
oversight_feedback = sa.Table(
    "oversight_feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("oversight_case.id"), nullable=False),
    sa.Column("finding_id", sa.Integer, sa.ForeignKey("oversight_finding.id"), nullable=False),
    sa.Column("rule_id", sa.String(40), nullable=False, index=True),
    sa.Column("rule_version", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # confirmed | cleared
    sa.Column("at", TS, nullable=False),
)

oversight_pseudonym = sa.Table(
    "oversight_pseudonym",
    metadata,
    sa.Column("pseudonym", sa.String(64), primary_key=True),
    sa.Column("person_key", sa.String(64), nullable=False),
)

# Local record of every re-identification (also sent to usmis.audit when it is there).
oversight_reidentification = sa.Table(
    "oversight_reidentification",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("finding_id", sa.Integer, sa.ForeignKey("oversight_finding.id"), nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    # The reason is free text that may name someone: sealed like every record (kit.crypto),
    # so `usmis keys rotate` re-wraps it with the rest.
    sa.Column("kek_id", sa.String(64), nullable=False),
    sa.Column("dek", sa.LargeBinary, nullable=False),
    sa.Column("reason", sa.LargeBinary, nullable=False),
    sa.Column("at", TS, nullable=False),
)

# The store extract's watermark (newest last_updated read), one row per extract folder.
oversight_watermark = sa.Table(
    "oversight_watermark",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("last_updated", TS),
    sa.Column("runs", sa.Integer, nullable=False, default=0),
)
