"""The audit log service (hash chain lands with step 3 of issue 6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection

from usmis.config import Settings

if TYPE_CHECKING:
    from usmis.access.model import Principal


def record_login(
    conn: Connection, settings: Settings, principal: Principal, *, outcome: str
) -> None:
    """Placeholder until the hash-chained log lands; keeps the login call sites stable."""
    return None
