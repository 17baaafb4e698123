"""The single seam between oversight and the system audit log (``usmis.audit``).

Re-identifying a finding's person and exporting the analytical extract are both recorded
in the hash-chained audit log, in the caller's transaction: if the entry cannot be
written, the work does not happen.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection

from usmis.audit import service as audit
from usmis.audit.model import AuditRecord
from usmis.config import Settings

PURPOSE_FRAUD = "FRAUD"  # HL7 v3 PurposeOfUse: fraud detection / budget oversight


def record_reidentification(conn: Connection, settings: Settings, actor: Any, finding_id: int,
                            person_key: str, reason: str) -> None:
    role = getattr(actor, "role", None)
    audit.append(conn, settings, AuditRecord(
        action="reidentify", subject=str(getattr(actor, "subject", "")),
        role=str(getattr(role, "value", role)) if role is not None else None,
        organization_id=getattr(actor, "organization_id", None), purpose=PURPOSE_FRAUD,
        resource_type="OversightFinding", entities=(f"OversightFinding/{finding_id}",),
        # Audit detail is JSON (usmis.audit renders it); the free-text reason stays in the
        # oversight re-identification log, out of the chain that patients read.
        persons=(person_key,), detail=json.dumps({"finding": finding_id}),
    ))


def record_extract(conn: Connection, settings: Settings, rows: dict[str, int],
                   watermark: str) -> None:
    """The oversight extract is a bulk export of pseudonymised data: one entry per run."""
    audit.append(conn, settings, AuditRecord(
        action="export", subject="system:oversight-extract", role="system",
        purpose=PURPOSE_FRAUD,
        detail=json.dumps({"extract_since": watermark or None, "rows": rows}, sort_keys=True),
    ))
