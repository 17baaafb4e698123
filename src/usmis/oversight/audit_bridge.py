"""The single seam between oversight and the system audit log (``usmis.audit``).

Re-identification must land in the hash-chained audit log.  The audit service is being
built in parallel; until it exposes a recorder, the local ``oversight_reidentification``
table (written by the caller in the same transaction) is the record.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from usmis.config import Settings


def record_reidentification(conn: Connection, settings: Settings, actor: Any, finding_id: int,
                            person_key: str, reason: str) -> None:
    """Send the re-identification to ``usmis.audit`` (wired when its recorder lands)."""
    return None
