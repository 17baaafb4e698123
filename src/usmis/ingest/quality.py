"""Per-source data quality: volumes, rejects by reason, IIN shares, duplicates, delay.

Figures are counts and shares only — no value of any record appears in the report.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from usmis.ingest import repository as repo


def report(conn: Connection, source_id: str | None = None) -> dict[str, Any]:
    """``{source_id: {...}}`` with messages, by_status, resources, rejects (by rule and
    field), iin (valid/missing/invalid counts and shares), duplicates and arrival delay."""
    rows = repo.quality_rows(conn)
    rejects: dict[str, list[dict[str, Any]]] = {}
    for row in repo.dead_letter_summary(conn):
        src, rule, fld, n = tuple(row)
        rejects.setdefault(src, []).append({"rule": rule, "field": fld, "count": int(n)})
    out: dict[str, Any] = {}
    names = {s.id: s for s in repo.list_sources(conn)}
    for sid in sorted(set(rows) | set(rejects) | set(names)):
        if source_id and sid != source_id:
            continue
        d = rows.get(sid, {"messages": 0, "by_status": {}, "iin": {}, "duplicates": 0,
                           "resources": 0})
        iin = d["iin"]
        with_person = sum(iin.values())
        src = names.get(sid)
        out[sid] = {
            "name": src.name if src else None,
            "kind": src.kind if src else None,
            "enabled": src.enabled if src else None,
            "messages": d["messages"],
            "by_status": d["by_status"],
            "resources": d["resources"],
            "rejects": rejects.get(sid, []),
            "reject_share": _share(d["by_status"].get("dead", 0), d["messages"]),
            "iin": {
                "with_person": with_person,
                "valid": iin.get("valid", 0),
                "missing": iin.get("missing", 0),
                "invalid": iin.get("invalid", 0),
                "missing_share": _share(iin.get("missing", 0), with_person),
                "invalid_share": _share(iin.get("invalid", 0), with_person),
            },
            "duplicates": d["duplicates"],
            "duplicate_share": _share(d["duplicates"], d["messages"] + d["duplicates"]),
            "delay_seconds": d.get("delay_seconds"),
        }
    return out


def _share(n: int, total: int) -> float | None:
    return round(n / total, 4) if total else None
