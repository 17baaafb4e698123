"""The rule catalogue: one ``rules/<id>.sql`` query plus ``rules/<id>.toml`` metadata each.

Why SQL files: investigators and auditors can read exactly what a rule does, and the same
SQL runs on DuckDB here and on Spark SQL at national scale.  The metadata says what the rule
catches, on what basis, what data it needs, how the amount at risk is computed and which
evidence columns an investigator sees.

Every rule query returns the same columns (the *finding contract*)::

    provider_id VARCHAR, practitioner_id VARCHAR, person_key VARCHAR,
    period_start DATE, period_end DATE,
    item_ids VARCHAR[]      -- claim ids at risk (attachment ids for phantom_attachment)
    evidence VARCHAR        -- JSON array of evidence rows (source system + record id ...)
    amount_at_risk DOUBLE   -- tenge
    likelihood DOUBLE       -- 0..1, the rule's belief that this is recoverable
    score DOUBLE            -- rule-specific strength (z-score, ratio, count ...)
    detail VARCHAR          -- short reason code, e.g. 'dead', 'across_systems'

Queries use ``$name`` parameters from the metadata's ``[params]`` plus ``$as_of`` (the
extract's as-of date).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RULES_DIR = Path(__file__).resolve().parent / "rules"

FINDING_COLUMNS = (
    "provider_id",
    "practitioner_id",
    "person_key",
    "period_start",
    "period_end",
    "item_ids",
    "evidence",
    "amount_at_risk",
    "likelihood",
    "score",
    "detail",
)

SEVERITIES = ("low", "medium", "high", "critical")
_PARAM = re.compile(r"\$([a-z_][a-z0-9_]*)")


@dataclass(frozen=True)
class Rule:
    id: str  # = the scheme id in docs/CONTRACTS.md
    version: int
    title: str
    catches: str
    basis: str
    data: tuple[str, ...]
    severity: str
    amount_method: str
    evidence_columns: tuple[str, ...]
    sql: str
    params: dict[str, Any] = field(default_factory=dict)

    def bind(self, as_of: Any, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The parameters this rule's SQL actually uses (DuckDB refuses unused ones)."""
        values = {**self.params, **(overrides or {}), "as_of": as_of}
        used = set(_PARAM.findall(self.sql))
        missing = used - values.keys()
        if missing:
            raise ValueError(f"rule {self.id}: parameters without a value: {sorted(missing)}")
        return {k: values[k] for k in used}


def load_rule(sql_path: Path) -> Rule:
    meta = tomllib.loads(sql_path.with_suffix(".toml").read_text(encoding="utf-8"))
    rule = Rule(
        id=meta["id"],
        version=int(meta["version"]),
        title=meta["title"],
        catches=meta["catches"],
        basis=meta["basis"],
        data=tuple(meta["data"]),
        severity=meta["severity"],
        amount_method=meta["amount_method"],
        evidence_columns=tuple(meta["evidence_columns"]),
        sql=sql_path.read_text(encoding="utf-8"),
        params=dict(meta.get("params", {})),
    )
    if rule.id != sql_path.stem:
        raise ValueError(f"rule file {sql_path.name}: id {rule.id!r} differs from the file name")
    if rule.severity not in SEVERITIES:
        raise ValueError(f"rule {rule.id}: severity must be one of {SEVERITIES}")
    return rule


def load_catalogue(rules_dir: Path = RULES_DIR, only: list[str] | None = None) -> list[Rule]:
    rules = [load_rule(p) for p in sorted(rules_dir.glob("*.sql"))]
    if only:
        unknown = set(only) - {r.id for r in rules}
        if unknown:
            raise ValueError(f"unknown rule ids: {sorted(unknown)}")
        rules = [r for r in rules if r.id in only]
    return rules
