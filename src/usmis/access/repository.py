"""All SQL of the access domain."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, select

from usmis.access import tables as t


def insert_user(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(t.user.insert().values(**values))


def get_user(conn: Connection, username: str) -> RowMapping | None:
    row = conn.execute(select(t.user).where(t.user.c.username == username)).mappings().first()
    return row


def list_users(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(select(t.user).order_by(t.user.c.username)).mappings())


def insert_client(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(t.client.insert().values(**values))


def get_client(conn: Connection, client_id: str) -> RowMapping | None:
    return (
        conn.execute(select(t.client).where(t.client.c.client_id == client_id)).mappings().first()
    )


def utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for timezone-aware columns; treat them as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    from datetime import UTC

    return value.replace(tzinfo=UTC)
