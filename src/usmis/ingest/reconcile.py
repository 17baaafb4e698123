"""Evaluation: does what was stored reconcile with a synthetic nation's ground truth?

This is evaluation code: it is the one place in ingest that reads ``ground_truth/``.
Per source it compares

- messages processed into the store (inbox ``done``) with the ground truth's well-formed
  records (exact re-sends are deduplicated by the inbox and not counted twice),
- dead letters with the malformed records,
- stored Patients with the distinct patient ids the source used (no more of them),
- for FHIR sources, stored resources per type with the records of that type the bundles
  carried (exactly as many),

and that nothing is left pending and no source record is stored twice.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from usmis.ingest import tables as t

HL7_KINDS = {"ADT^A01", "ADT^A03", "ADT^A04", "ADT^A08", "ADT^A40", "ORU^R01"}

# The ground truth says in words why a record is malformed; these are the rules (and
# fields) the pipeline must give the same records.
_REASONS: list[tuple[str, str, str | None]] = [
    ("wrong number of columns", "column-count", "row"),
    ("invalid date in column ", "date-format", None),  # field = the named column
    ("bytes not valid", "encoding", None),
    ("truncated JSON", "json", None),
    ("wrong type: ", "date-format", None),
    ("PID segment truncated", "required", "PID-3"),
    ("MSH segment broken", "structure", "MSH-1"),
    ("PID-7 is not an HL7 date", "date-format", "PID-7"),
    ("Patient.birthDate has the wrong type", "fhir-invalid", None),
    ("Encounter.status and Encounter.class missing", "fhir-invalid", None),
]


def expected_rule(reason: str) -> str:
    for prefix, rule, _field in _REASONS:
        if reason.startswith(prefix):
            return rule
    return "unknown:" + reason


def expected_rejects(nation_dir: Path) -> dict[str, dict[str, int]]:
    """Per source: how many malformed records each rule should catch."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with (nation_dir / "ground_truth" / "malformed.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out[row["source_id"]][expected_rule(row["reason"])] += 1
    return {k: dict(v) for k, v in out.items()}


def actual_rejects(conn: Connection) -> dict[str, dict[str, int]]:
    d = t.dead_letter
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for src, rule, n in conn.execute(
            select(d.c.source_id, d.c.rule, func.count()).where(d.c.status == "open")
            .group_by(d.c.source_id, d.c.rule)):
        out[src][rule] += int(n)
    return {k: dict(v) for k, v in out.items()}


def expected(nation_dir: Path) -> dict[str, dict[str, int]]:
    """Per source: messages (well-formed), malformed, patients, and FHIR types."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with (nation_dir / "ground_truth" / "counts.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            src, kind = row["source_id"], row["kind"]
            good, bad = int(row["well_formed"]), int(row["malformed"])
            d = out[src]
            if kind == "patient_ids":
                d["patients"] = good
            elif kind in HL7_KINDS or kind in {"Bundle", "row"}:
                d["messages"] += good
                d["malformed"] += bad
            else:
                d[f"type:{kind}"] = good
    return {k: dict(v) for k, v in out.items()}


def actual(conn: Connection) -> dict[str, dict[str, int]]:
    from usmis.fhir import tables as ft

    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    i = t.inbox
    for src, status, n in conn.execute(
            select(i.c.source_id, i.c.status, func.count()).group_by(i.c.source_id, i.c.status)):
        out[src][status] = int(n)
    r = ft.resource
    for src, rtype, n in conn.execute(
            select(r.c.source_id, r.c.resource_type, func.count())
            .where(r.c.deleted.is_(False))
            .group_by(r.c.source_id, r.c.resource_type)):
        if src:
            out[src][f"type:{rtype}"] = int(n)
    return {k: dict(v) for k, v in out.items()}


def reconcile(conn: Connection, nation_dir: Path) -> dict[str, Any]:
    """``{"ok": bool, "sources": {id: {...}}, "problems": [...]}``."""
    exp, act = expected(nation_dir), actual(conn)
    exp_rej, act_rej = expected_rejects(nation_dir), actual_rejects(conn)
    problems: list[str] = []
    table: dict[str, Any] = {}
    for src in sorted(exp):
        e, a = exp[src], act.get(src, {})
        row: dict[str, Any] = {
            "well_formed": e.get("messages", 0), "stored": a.get("done", 0),
            "malformed": e.get("malformed", 0), "dead": a.get("dead", 0),
            "pending": a.get("pending", 0),
        }
        if "patients" in e:
            row["patients_expected"] = e["patients"]
            row["patients_stored"] = a.get("type:Patient", 0)
        types = sorted(k[5:] for k in e if k.startswith("type:") and k != "type:Patient")
        for rtype in types:
            row[f"{rtype}_expected"] = e[f"type:{rtype}"]
            row[f"{rtype}_stored"] = a.get(f"type:{rtype}", 0)
        row["rejects_expected"] = exp_rej.get(src, {})
        row["rejects"] = act_rej.get(src, {})
        table[src] = row
        if row["rejects"] != row["rejects_expected"]:
            problems.append(f"{src}: rejects by rule {row['rejects']} where the ground truth "
                            f"has {row['rejects_expected']}")
        if row["stored"] != row["well_formed"]:
            problems.append(f"{src}: stored {row['stored']} of {row['well_formed']} records")
        if row["dead"] != row["malformed"]:
            problems.append(f"{src}: {row['dead']} dead letters for {row['malformed']} "
                            "malformed records")
        if row["pending"]:
            problems.append(f"{src}: {row['pending']} still pending")
        # Each of these records is its own resource (a Bundle's Patient is not: many
        # Bundles name one patient, counted below), so the store holds exactly as many.
        for rtype in types:
            if row[f"{rtype}_stored"] != row[f"{rtype}_expected"]:
                problems.append(f"{src}: {row[f'{rtype}_stored']} {rtype} resources stored "
                                f"for {row[f'{rtype}_expected']} records")
        # More Patients than the source has patient ids would be duplicates.  Fewer can be
        # right: the ground truth counts a source's local ids even when no delivered record
        # uses one (seen with duplicate local ids of one person that never got a record).
        if "patients_expected" in row and row["patients_stored"] > row["patients_expected"]:
            problems.append(f"{src}: {row['patients_stored']} Patients for "
                            f"{row['patients_expected']} patient ids")
    return {"ok": not problems, "sources": table, "problems": problems}


def duplicates(conn: Connection) -> int:
    """Source records stored more than once: two resources of one type carrying the same
    source identifier (system ``…/sid/source/{id}/{kind}`` and value, compared through the
    store's blind identifier index)."""
    from usmis.fhir.search.tables import idx_token as tok

    inner = (
        select(tok.c.res_type)
        .where(tok.c.param == "identifier", tok.c.system.like("https://usmis.kz/sid/source/%"))
        .group_by(tok.c.res_type, tok.c.system, tok.c.code)
        .having(func.count(func.distinct(tok.c.res_id)) > 1)
        .subquery()
    )
    return int(conn.execute(select(func.count()).select_from(inner)).scalar_one())
