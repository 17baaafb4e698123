"""The durable inbox: raw bytes, hash, source and time, committed before any acknowledgement.

A message refused by validation at the channel (an HL7 AE/AR, a file row that does not
parse) is still written — straight to status ``dead`` with its dead letter — so nothing a
known source sent is ever lost, and the reason is on record.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from usmis.config import Settings
from usmis.ingest import repository as repo
from usmis.ingest.mapping.common import Reject
from usmis.ingest.model import Incoming
from usmis.ingest.sealing import seal


@dataclass
class Receipt:
    inbox_id: int
    new: bool


def receive(
    conn: Connection, settings: Settings, msg: Incoming, reject: Reject | None = None,
    *, iin_status: str | None = None,
) -> Receipt:
    """Write one message to the inbox (pending, or dead with ``reject``); idempotent."""
    return receive_group(conn, settings, [(msg, reject, iin_status)])[0]


def receive_group(
    conn: Connection, settings: Settings,
    items: list[tuple[Incoming, Reject | None, str | None]],
) -> list[Receipt]:
    """:func:`receive` of each (message, reject, IIN status), the inbox rows written in
    one statement on PostgreSQL (a listener's group commit)."""
    ids = repo.insert_messages(conn, [_values(settings, m, r, iin) for m, r, iin in items])
    for (msg, reject, _), (inbox_id, new) in zip(items, ids, strict=True):
        if new and reject is not None:
            repo.insert_dead_letter(
                conn, inbox_id=inbox_id, source_id=msg.source_id, rule=reject.rule,
                field=reject.field, detail=reject.detail,
            )
    return [Receipt(i, new) for i, new in ids]


def _values(
    settings: Settings, msg: Incoming, reject: Reject | None, iin_status: str | None
) -> dict[str, object]:
    h = msg.content_hash
    return {
        "source_id": msg.source_id,
        "channel": msg.channel,
        "format": msg.format,
        "message_id": msg.message_id[:200],
        **seal(settings, msg.source_id, h, msg.raw),
        "content_hash": h,
        "context": msg.context,
        "event_time": msg.event_time,
        "received_at": repo.now(),
        "status": "dead" if reject is not None else "pending",
        "iin_status": iin_status,
    }


def receive_many(conn: Connection, settings: Settings, msgs: list[Incoming]) -> int:
    """Bulk path for file rows that are validated later by the worker.  Returns new rows."""
    return repo.insert_messages_bulk(conn, [_values(settings, m, None, None) for m in msgs])
