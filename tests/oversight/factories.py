"""Hand-made extracts: a few rows per table, written as real Parquet for the real engine."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from usmis.oversight.catalogue import load_catalogue
from usmis.oversight.engine import open_extract, run_rule
from usmis.oversight.extract.schema import TABLES
from usmis.oversight.extract.writer import Manifest, conform, write_manifest, write_part

AS_OF = date(2025, 12, 31)
_seq = itertools.count(1)


def d(s: str) -> date:
    return date.fromisoformat(s)


class ExtractBuilder:
    """Collects rows per table; ``write`` conforms them to the extract schema."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}

    def add(self, table: str, **row: Any) -> dict[str, Any]:
        row.setdefault("source_system", "test")
        row.setdefault("source_record_id", f"{table}-{next(_seq)}")
        self.rows[table].append(row)
        return row

    # Domain factories -------------------------------------------------------------
    def person(self, key: str, *, sex: str = "F", born: str = "1980-06", region: str = "ALA",
               died: str | None = None, emigrated: str | None = None) -> str:
        y, m = born.split("-")
        self.add("persons", person_key=key, sex=sex, birth_year=int(y), birth_month=int(m),
                 region=region)
        if died:
            self.add("life_events", event_id=f"death-{key}", person_key=key, event="death",
                     event_date=d(died), source_system="death_register")
        if emigrated:
            self.add("life_events", event_id=f"emig-{key}", person_key=key, event="emigration",
                     event_date=d(emigrated), source_system="migration")
        return key

    def org(self, org_id: str, kind: str = "polyclinic", region: str = "ALA") -> str:
        self.add("organizations", org_id=org_id, org_kind=kind, region=region,
                 org_name=f"Org {org_id}")
        return org_id

    def practitioner(self, pid: str, org: str, *, speciality: str = "gp",
                     licensed: tuple[str, str | None] | None = ("2000-01-01", None),
                     employed: tuple[str, str | None] | None = ("2000-01-01", None),
                     died: str | None = None) -> str:
        self.add("practitioners", practitioner_id=pid, speciality=speciality,
                 death_date=d(died) if died else None)
        if licensed:
            self.add("licences", licence_id=f"lic-{pid}", practitioner_id=pid,
                     valid_from=d(licensed[0]),
                     valid_to=d(licensed[1]) if licensed[1] else None)
        if employed:
            self.add("employments", employment_id=f"emp-{pid}-{org}", practitioner_id=pid,
                     org_id=org, start_date=d(employed[0]),
                     end_date=d(employed[1]) if employed[1] else None)
        return pid

    def tariff(self, code: str, price: float, **kw: Any) -> str:
        kw.setdefault("kind", "service")
        self.add("tariffs", code=code, price=price, **kw)
        return code

    def claim(self, claim_id: str, person: str, provider: str, when: str, code: str,
              amount: float, *, practitioner: str | None = None, quantity: float = 1,
              kind: str = "service", record_type: str = "encounter",
              record_id: str | None = None, billing_system: str = "his-a",
              source_system: str = "fund") -> str:
        self.add("claims", claim_id=claim_id, person_key=person, provider_id=provider,
                 practitioner_id=practitioner, service_date=d(when), code=code, kind=kind,
                 quantity=quantity, amount=amount, record_type=record_type,
                 record_id=record_id, billing_system=billing_system,
                 source_system=source_system, source_record_id=claim_id)
        return claim_id

    def stay(self, stay_id: str, person: str, org: str, admit: str, discharge: str,
             case_group: str = "CG1") -> str:
        self.add("stays", stay_id=stay_id, person_key=person, org_id=org,
                 admit_date=d(admit), discharge_date=d(discharge), case_group=case_group)
        return stay_id

    def write(self, root: Path, as_of: date = AS_OF) -> Path:
        for name, rows in self.rows.items():
            if rows:
                write_part(root, name, conform(name, rows), 1)
        write_manifest(root, Manifest(builder="test", as_of=as_of.isoformat()))
        return root


def days(start: str, n: int) -> list[str]:
    s = d(start)
    return [(s + timedelta(days=i)).isoformat() for i in range(n)]


def run(builder: ExtractBuilder, root: Path, rule_id: str, as_of: date = AS_OF,
        **overrides: Any) -> list[dict[str, Any]]:
    """Run one rule over the builder's data; findings as dicts sorted by item ids."""
    builder.write(root, as_of)
    (rule,) = load_catalogue(only=[rule_id])
    with open_extract(root, threads=1, memory_limit="500MB") as con:
        table = run_rule(con, rule, as_of, overrides).findings
    return sorted(table.to_pylist(), key=lambda f: (f["item_ids"] or [], f["detail"] or ""))
