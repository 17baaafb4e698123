"""Tables of the ingest domain: sources, the durable inbox, dead letters, merges, clocks.

The inbox is the hand-off that makes "acknowledged means never lost" true: a channel
acknowledges only after the raw message is committed here.  Raw content is sealed
(encrypted) because HL7 and CSV payloads carry direct identifiers in plaintext.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from usmis.kit.db import metadata

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

source = Table(
    "ingest_source",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("channels", JSON, nullable=False),  # ["mllp", "rest", "file"]
    Column("formats", JSON, nullable=False),  # ["hl7v2", "fhir", "csv", "json", "tsv"]
    Column("mapping", String(100)),  # name of the file mapping, for file sources
    Column("token_hash", String(64)),  # sha256 of the REST API token (never the token)
    Column("mllp_peers", JSON, nullable=False),  # allow-list: IPs / CIDRs
    Column("mllp_secret_hash", String(64)),  # sha256 of the shared secret sent in MSH-8
    Column("cert_fingerprint", String(64)),  # sha256 of an accepted TLS client certificate
    Column("enabled", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

inbox = Table(
    "ingest_inbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source_id", String(64), nullable=False),
    Column("channel", String(10), nullable=False),  # mllp | rest | file
    Column("format", String(20), nullable=False),  # hl7v2 | fhir | csv | json
    Column("message_id", String(200), nullable=False),  # control id / file:row
    Column("content", LargeBinary, nullable=False),  # raw bytes, AES-256-GCM ciphertext
    Column("kek_id", String(64)),  # key-encryption key of ``dek`` (usmis keys rotate)
    Column("dek", LargeBinary),  # the wrapped per-message data key
    Column("content_hash", String(64), nullable=False),  # sha256 of the raw bytes
    Column("context", JSON),  # e.g. the CSV header and mapping name of a file row
    Column("event_time", DateTime(timezone=True)),  # the source's own timestamp
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("status", String(10), nullable=False),  # pending | done | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("processed_at", DateTime(timezone=True)),
    Column("stored", Integer),  # resources written for this message
    Column("iin_status", String(8)),  # valid | missing | invalid (patient-bearing messages)
    Column("duplicates", Integer, nullable=False, default=0),  # identical re-deliveries
    UniqueConstraint("source_id", "content_hash", name="uq_ingest_inbox_source_hash"),
    Index("ix_ingest_inbox_status_id", "status", "id"),
)

dead_letter = Table(
    "ingest_dead_letter",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("inbox_id", BigInteger, nullable=False, index=True),
    Column("source_id", String(64), nullable=False),
    Column("rule", String(60), nullable=False),  # e.g. "iin-checksum", "required", "encoding"
    Column("field", String(120), nullable=False),  # e.g. "PID-3", "birth_date", "row"
    Column("detail", Text, nullable=False),  # the exact reason; values only if not personal
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("status", String(10), nullable=False),  # open | replayed | resolved
    Column("resolved_at", DateTime(timezone=True)),
    Index("ix_ingest_dead_letter_source_rule", "source_id", "rule"),
)

merge = Table(
    "ingest_merge",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source_id", String(64), nullable=False),
    Column("survivor_patient", String(64), nullable=False),  # FHIR Patient id (opaque)
    Column("merged_patient", String(64), nullable=False),
    Column("inbox_id", BigInteger, nullable=False),
    Column("event_time", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("inbox_id", name="uq_ingest_merge_inbox"),
)

# A file delivered by a file source: its header (column names) and counts.  Each data row is
# its own inbox message (context {"file_id", "row"}), so one bad row never rejects its file.
file = Table(
    "ingest_file",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source_id", String(64), nullable=False),
    Column("name", String(300), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("header", JSON),
    Column("rows", Integer, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("source_id", "content_hash", name="uq_ingest_file_source_hash"),
)

# The last source timestamp applied to each source record, so that an older update arriving
# after a newer one does not overwrite it.  record_key is a keyed hash of system|value.
record_clock = Table(
    "ingest_record_clock",
    metadata,
    Column("source_id", String(64), primary_key=True),
    Column("record_key", String(64), primary_key=True),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("inbox_id", BigInteger, nullable=False),
)
