"""Dead letters: list (by source and reason), show (raw content), fix and replay.

Replaying puts the inbox message back to ``pending`` (optionally with corrected content)
and closes its open dead letter as ``replayed``; if it fails again, a new dead letter
with the new reason is written, so the history of attempts stays visible.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from usmis.config import Settings
from usmis.ingest import repository as repo
from usmis.ingest.model import sha256_hex
from usmis.ingest.sealing import seal, unseal
from usmis.kit.errors import Conflict, NotFound


def list_letters(
    conn: Connection, *, source_id: str | None = None, rule: str | None = None,
    status: str | None = "open", limit: int = 100, after_id: int = 0,
) -> list[dict[str, Any]]:
    rows = repo.list_dead_letters(conn, source_id=source_id, rule=rule, status=status,
                                  limit=limit, after_id=after_id)
    out = []
    for r in rows:
        m = {str(k): v for k, v in r._mapping.items()}
        for k in ("created_at", "resolved_at", "received_at"):
            if m.get(k) is not None:
                m[k] = m[k].isoformat()
        out.append(m)
    return out


def show(conn: Connection, settings: Settings, dl_id: int) -> dict[str, Any]:
    """One dead letter with its raw content (for an authorised operator only)."""
    dl = repo.get_dead_letter(conn, dl_id)
    if dl is None:
        raise NotFound(f"no dead letter {dl_id}")
    msg = repo.get_message(conn, dl.inbox_id)
    if msg is None:
        raise NotFound(f"dead letter {dl_id} has no inbox message")
    raw = unseal(settings, msg)
    m = {str(k): v for k, v in dl._mapping.items()}
    m.update(message_id=msg.message_id, channel=msg.channel, format=msg.format,
             context=msg.context, content=raw.decode("utf-8", errors="replace"),
             content_bytes=len(raw))
    for k in ("created_at", "resolved_at"):
        if m.get(k) is not None:
            m[k] = m[k].isoformat()
    return m


def replay(conn: Connection, settings: Settings, dl_id: int, *,
           content: bytes | None = None) -> int:
    """Requeue the message of a dead letter (with fixed ``content`` if given).

    Returns the inbox id.  The worker then processes it like any new message.
    """
    dl = repo.get_dead_letter(conn, dl_id)
    if dl is None:
        raise NotFound(f"no dead letter {dl_id}")
    if dl.status != "open":
        raise Conflict(f"dead letter {dl_id} is already {dl.status}")
    msg = repo.get_message(conn, dl.inbox_id)
    if msg is None:
        raise NotFound(f"dead letter {dl_id} has no inbox message")
    if content is not None:
        h = sha256_hex(content)
        cols = seal(settings, msg.source_id, h, content)
        repo.replace_content(conn, msg.id, content_hash=h, **cols)
    repo.requeue(conn, msg.id)
    repo.close_dead_letters(conn, msg.id, "replayed")
    return int(msg.id)


def replay_matching(conn: Connection, settings: Settings, *, source_id: str | None = None,
                    rule: str | None = None, limit: int = 10000) -> int:
    """Requeue every open dead letter of a source / rule (after a mapping fix)."""
    n = 0
    for dl in repo.list_dead_letters(conn, source_id=source_id, rule=rule, status="open",
                                     limit=limit):
        replay(conn, settings, int(dl.id))
        n += 1
    return n
